//! A minimal writer for NumPy's `.npy` format (version 1.0, little-endian float32, C order).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `data` with `shape` as a `.npy` file that `numpy.load` reads.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_str = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded to a multiple of 64 with '\n' last.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    f.write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_f32;

    /// The file's header text and data, read by the NPY 1.0 layout (NumPy's
    /// `numpy/lib/format.py` spec): magic, version 1.0, a little-endian u16 header length, an
    /// ASCII dict padded with spaces and ended by '\n' so the data starts at a multiple of 64.
    fn read(path: &std::path::Path) -> (String, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0, "the data is 64-byte aligned");
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.ends_with('\n'));
        let data = bytes[10 + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (header.trim_end().to_string(), data)
    }

    #[test]
    fn writes_the_npy_1_0_layout_numpy_reads() {
        let path = std::env::temp_dir().join(format!("burnlens-npy-{}.npy", std::process::id()));
        write_f32(&path, &[2, 3], &[0.0, 1.5, -2.0, 3.25, 4.0, 5.0]).unwrap();
        let (header, data) = read(&path);
        assert_eq!(
            header,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        );
        assert_eq!(data, vec![0.0, 1.5, -2.0, 3.25, 4.0, 5.0]);
        // A 1-D shape is a one-element tuple, written with its trailing comma.
        write_f32(&path, &[3], &[1.0, 2.0, 3.0]).unwrap();
        let (header, _) = read(&path);
        assert!(header.contains("'shape': (3,)"), "{header}");
        let _ = std::fs::remove_file(&path);
    }
}
