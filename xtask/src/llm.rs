//! A minimal client for OpenAI-compatible chat endpoints (`POST <base>/chat/completions`), used
//! to ask a language model to describe an attention head.

use anyhow::{Context, Result, bail};

/// Where to send chat requests.
#[derive(Debug, Clone)]
pub struct ChatEndpoint {
    /// Base URL, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
}

impl ChatEndpoint {
    /// The endpoint from flags, else from the environment: `BURNLENS_LLM_URL`, and the key from
    /// `BURNLENS_LLM_API_KEY` or `OPENAI_API_KEY`. `None` when no URL is given anywhere.
    pub fn from_flags(url: Option<&str>, model: &str) -> Option<Self> {
        let base_url = url
            .map(str::to_string)
            .or_else(|| std::env::var("BURNLENS_LLM_URL").ok())?;
        let api_key = std::env::var("BURNLENS_LLM_API_KEY")
            .ok()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok());
        Some(Self {
            base_url,
            model: model.to_string(),
            api_key,
        })
    }

    /// Sends `prompt` as one user message and returns the reply's text.
    pub fn complete(&self, prompt: &str) -> Result<String> {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
        });
        let mut request = ureq::post(&url).set("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match request.send_string(&body.to_string()) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                bail!("{url} answered {code}: {text}");
            }
            Err(e) => return Err(e).with_context(|| format!("sending the request to {url}")),
        };
        let reply: serde_json::Value = serde_json::from_str(&response.into_string()?)
            .with_context(|| format!("{url} did not answer JSON"))?;
        reply["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{url} answered without choices[0].message.content: {reply}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A one-request OpenAI-compatible server on localhost: checks what it receives and
    /// answers with a fixed completion.
    #[test]
    fn client_talks_to_an_openai_compatible_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                headers.push(line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let reply = r#"{"choices":[{"message":{"role":"assistant","content":"It attends to the previous token."}}]}"#;
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
            (request_line, headers, String::from_utf8(body).unwrap())
        });
        let endpoint = ChatEndpoint {
            base_url: format!("http://127.0.0.1:{port}/v1/"),
            model: "test-model".into(),
            api_key: Some("sk-test".into()),
        };
        let answer = endpoint.complete("What does head L1H2 do?").unwrap();
        assert_eq!(answer, "It attends to the previous token.");
        let (line, headers, body) = server.join().unwrap();
        assert!(line.starts_with("POST /v1/chat/completions "), "{line}");
        assert!(
            headers.iter().any(|h| h == "Authorization: Bearer sk-test"),
            "{headers:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["messages"][0]["content"], "What does head L1H2 do?");
    }

    #[test]
    fn a_refusing_server_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).unwrap();
            let reply = "{\"error\":\"bad key\"}";
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        });
        let endpoint = ChatEndpoint {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            model: "m".into(),
            api_key: None,
        };
        let err = endpoint.complete("x").unwrap_err().to_string();
        server.join().unwrap();
        assert!(
            err.contains("answered 401") && err.contains("bad key"),
            "{err}"
        );
    }
}
