//! GPT-2's computational graph at EAP-IG's and ACDC's granularity: sources are the token
//! embeddings (`input`), every head's output and every MLP's output; destinations are every
//! head's query, key and value inputs, every MLP's input and the logits; an edge joins a source
//! to every destination it reaches through the residual stream.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A source of the graph: something that writes into the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The token embeddings (`hook_embed`; the position embeddings are not a node, as in
    /// EAP-IG: they are the same in every run of a prompt's length).
    Input,
    /// Head `head` of layer `layer` (`blocks.{layer}.attn.hook_result`).
    Head {
        /// The layer.
        layer: usize,
        /// The head.
        head: usize,
    },
    /// The MLP of a layer (`blocks.{layer}.hook_mlp_out`).
    Mlp(usize),
}

/// Which input of an attention head a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qkv {
    /// The query input (`hook_q_input`).
    Q,
    /// The key input (`hook_k_input`).
    K,
    /// The value input (`hook_v_input`).
    V,
}

impl Qkv {
    /// The three, in EAP-IG's order.
    pub const ALL: [Qkv; 3] = [Qkv::Q, Qkv::K, Qkv::V];

    /// Its position in [`Qkv::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn letter(self) -> char {
        ['q', 'k', 'v'][self.index()]
    }
}

/// A destination of the graph: something that reads the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    /// One input of a head (`blocks.{layer}.hook_{q,k,v}_input`, that head's slice).
    Head {
        /// The layer.
        layer: usize,
        /// The head.
        head: usize,
        /// Query, key or value.
        qkv: Qkv,
    },
    /// The MLP's input (`blocks.{layer}.hook_mlp_in`).
    Mlp(usize),
    /// The unembedding's input (the last block's `hook_resid_post`).
    Logits,
}

impl Dest {
    /// The source node this destination belongs to (`None` for the logits).
    pub fn node(self) -> Option<Source> {
        match self {
            Dest::Head { layer, head, .. } => Some(Source::Head { layer, head }),
            Dest::Mlp(l) => Some(Source::Mlp(l)),
            Dest::Logits => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Input => f.write_str("input"),
            Source::Head { layer, head } => write!(f, "a{layer}.h{head}"),
            Source::Mlp(l) => write!(f, "m{l}"),
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Head { layer, head, qkv } => write!(f, "a{layer}.h{head}<{}>", qkv.letter()),
            Dest::Mlp(l) => write!(f, "m{l}"),
            Dest::Logits => f.write_str("logits"),
        }
    }
}

/// An edge, named as EAP-IG names it: `a0.h3->a1.h2<q>`, `input->m0`, `m1->logits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// Where it starts.
    pub src: Source,
    /// Where it ends.
    pub dst: Dest,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.src, self.dst)
    }
}

/// Parses `l` and `h` out of `a{l}.h{h}`.
fn parse_head(s: &str) -> Option<(usize, usize)> {
    let (l, h) = s.strip_prefix('a')?.split_once(".h")?;
    Some((l.parse().ok()?, h.parse().ok()?))
}

impl FromStr for Source {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "input" {
            return Ok(Source::Input);
        }
        if let Some((layer, head)) = parse_head(s) {
            return Ok(Source::Head { layer, head });
        }
        if let Some(l) = s.strip_prefix('m').and_then(|l| l.parse().ok()) {
            return Ok(Source::Mlp(l));
        }
        Err(Error::UnknownEdge {
            name: s.to_string(),
            why: "a source is input, a{layer}.h{head} or m{layer}".into(),
        })
    }
}

impl FromStr for Dest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "logits" {
            return Ok(Dest::Logits);
        }
        if let Some((node, rest)) = s.split_once('<') {
            let qkv = match rest {
                "q>" => Some(Qkv::Q),
                "k>" => Some(Qkv::K),
                "v>" => Some(Qkv::V),
                _ => None,
            };
            if let (Some((layer, head)), Some(qkv)) = (parse_head(node), qkv) {
                return Ok(Dest::Head { layer, head, qkv });
            }
        } else if let Some(l) = s.strip_prefix('m').and_then(|l| l.parse().ok()) {
            return Ok(Dest::Mlp(l));
        }
        Err(Error::UnknownEdge {
            name: s.to_string(),
            why: "a destination is a{layer}.h{head}<q|k|v>, m{layer} or logits".into(),
        })
    }
}

impl FromStr for Edge {
    type Err = Error;

    /// Parses the name alone; [`EdgeGraph::index_of`] also checks that the edge exists.
    fn from_str(s: &str) -> Result<Self> {
        let (src, dst) = s.split_once("->").ok_or_else(|| Error::UnknownEdge {
            name: s.to_string(),
            why: "an edge is written source->destination".into(),
        })?;
        let whole = |e: Error| match e {
            Error::UnknownEdge { name, why } => Error::UnknownEdge {
                name: s.to_string(),
                why: format!("{name:?}: {why}"),
            },
            other => other,
        };
        Ok(Edge {
            src: src.parse().map_err(whole)?,
            dst: dst.parse().map_err(whole)?,
        })
    }
}

/// The edge graph of a GPT-2 with `n_layers` blocks of `n_heads` heads.
///
/// Sources and destinations are numbered as EAP-IG numbers them (its score matrix's rows and
/// columns): sources `input`, then per layer its heads and its MLP; destinations per layer
/// the heads' queries, keys, values, then the MLP, and last the logits. [`EdgeGraph::edges`]
/// lists the edges in EAP-IG's order of creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeGraph {
    n_layers: usize,
    n_heads: usize,
    edges: Vec<Edge>,
}

impl EdgeGraph {
    /// The graph of a model with these shapes.
    pub fn new(n_layers: usize, n_heads: usize) -> Self {
        let mut edges = Vec::with_capacity(Self::edge_count(n_layers, n_heads));
        let mut stream = vec![Source::Input];
        for layer in 0..n_layers {
            for &src in &stream {
                for head in 0..n_heads {
                    for qkv in Qkv::ALL {
                        edges.push(Edge {
                            src,
                            dst: Dest::Head { layer, head, qkv },
                        });
                    }
                }
            }
            stream.extend((0..n_heads).map(|head| Source::Head { layer, head }));
            edges.extend(stream.iter().map(|&src| Edge {
                src,
                dst: Dest::Mlp(layer),
            }));
            stream.push(Source::Mlp(layer));
        }
        edges.extend(stream.iter().map(|&src| Edge {
            src,
            dst: Dest::Logits,
        }));
        Self {
            n_layers,
            n_heads,
            edges,
        }
    }

    /// The number of edges, in closed form: a layer-`l` head input reads `1 + l(H+1)` sources,
    /// a layer-`l` MLP also the layer's `H` heads, the logits all `1 + L(H+1)`.
    pub fn edge_count(n_layers: usize, n_heads: usize) -> usize {
        let (l, h) = (n_layers, n_heads);
        let before: usize = (0..l).map(|i| 1 + i * (h + 1)).sum();
        3 * h * before + (before + l * h) + (1 + l * (h + 1))
    }

    /// Blocks.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Heads per block.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Every edge, in EAP-IG's order.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The number of edges.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether the graph has no edge (never: the input reaches the logits).
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Sources: `1 + L(H+1)`.
    pub fn n_sources(&self) -> usize {
        1 + self.n_layers * (self.n_heads + 1)
    }

    /// Destinations: `L(3H+1) + 1`.
    pub fn n_dests(&self) -> usize {
        self.n_layers * (3 * self.n_heads + 1) + 1
    }

    /// A source's number.
    pub fn source_index(&self, src: Source) -> usize {
        let per = self.n_heads + 1;
        match src {
            Source::Input => 0,
            Source::Head { layer, head } => 1 + layer * per + head,
            Source::Mlp(l) => 1 + l * per + self.n_heads,
        }
    }

    /// A destination's number.
    pub fn dest_index(&self, dst: Dest) -> usize {
        let per = 3 * self.n_heads + 1;
        match dst {
            Dest::Head { layer, head, qkv } => layer * per + qkv.index() * self.n_heads + head,
            Dest::Mlp(l) => l * per + 3 * self.n_heads,
            Dest::Logits => self.n_layers * per,
        }
    }

    /// How many sources write before the destinations of layer `layer`'s heads read (its
    /// MLP also reads the layer's heads: add `n_heads`).
    pub fn sources_before(&self, layer: usize) -> usize {
        1 + layer * (self.n_heads + 1)
    }

    fn check_source(&self, src: Source) -> bool {
        match src {
            Source::Input => true,
            Source::Head { layer, head } => layer < self.n_layers && head < self.n_heads,
            Source::Mlp(l) => l < self.n_layers,
        }
    }

    fn check_dest(&self, dst: Dest) -> bool {
        match dst {
            Dest::Head { layer, head, .. } => layer < self.n_layers && head < self.n_heads,
            Dest::Mlp(l) => l < self.n_layers,
            Dest::Logits => true,
        }
    }

    /// Whether `src` writes before `dst` reads.
    pub fn reaches(&self, src: Source, dst: Dest) -> bool {
        let needed = match dst {
            Dest::Head { layer, .. } => self.sources_before(layer),
            Dest::Mlp(l) => self.sources_before(l) + self.n_heads,
            Dest::Logits => self.n_sources(),
        };
        self.source_index(src) < needed
    }

    /// The edge's position in [`EdgeGraph::edges`].
    ///
    /// # Errors
    /// [`Error::UnknownEdge`] for a node outside the model or a source that does not reach
    /// the destination.
    pub fn index_of(&self, edge: Edge) -> Result<usize> {
        let why = if !self.check_source(edge.src) || !self.check_dest(edge.dst) {
            Some(format!(
                "the model has {} layers of {} heads",
                self.n_layers, self.n_heads
            ))
        } else if !self.reaches(edge.src, edge.dst) {
            Some(format!("{} writes after {} reads", edge.src, edge.dst))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::UnknownEdge {
                name: edge.to_string(),
                why,
            });
        }
        // Edges are grouped by destination in the order the destinations are read.
        let pos = self
            .edges
            .iter()
            .position(|e| *e == edge)
            .expect("a reachable edge of the model is in the graph");
        Ok(pos)
    }

    /// The edge named `name` (`a0.h0->a1.h0<q>`), as its position in [`EdgeGraph::edges`].
    ///
    /// # Errors
    /// [`Error::UnknownEdge`] naming it, when it is not an edge of this graph.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.index_of(name.trim().parse()?)
    }
}
