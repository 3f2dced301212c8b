//! Building malicious tarballs by hand: raw headers for what `tar::Builder` refuses, and a
//! gzip bomb generated on the fly.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::{Compress, Compression, FlushCompress};
use tar::{EntryType, Header};

/// A raw tar header: the path and link name bytes are written as given (no checks).
pub fn raw_header(path: &[u8], kind: EntryType, size: u64, link: &[u8]) -> Header {
    let mut h = Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// An uncompressed tar stream being built.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    /// Starts with a valid `module.toml` for `m@1.0.0`.
    pub fn with_manifest() -> Self {
        let mut t = Tar::default();
        t.file(b"module.toml", b"name = \"m\"\nversion = \"1.0.0\"\n");
        t
    }

    /// Appends a header and its content (padded to 512 bytes).
    pub fn raw(&mut self, header: &Header, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Appends a regular file.
    pub fn file(&mut self, path: &[u8], data: &[u8]) -> &mut Self {
        let h = raw_header(path, EntryType::Regular, data.len() as u64, b"");
        self.raw(&h, data)
    }

    /// Appends an entry without content (link, directory, device…).
    pub fn entry(&mut self, path: &[u8], kind: EntryType, link: &[u8]) -> &mut Self {
        let h = raw_header(path, kind, 0, link);
        self.raw(&h, &[])
    }

    /// Appends a PAX header whose records are `key=value`.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let h = raw_header(b"PaxHeader", EntryType::XHeader, data.len() as u64, b"");
        self.raw(&h, &data)
    }

    /// The tar stream, ended, gzip-compressed.
    pub fn gz(&self) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&self.bytes).unwrap();
        e.write_all(&[0u8; 1024]).unwrap();
        e.finish().unwrap()
    }
}

/// A gzip stream that inflates to `prefix` followed by `zero_mib` MiB of zeros, made small
/// without compressing gigabytes: one fully flushed deflate block of 1 MiB of zeros (which
/// refers to nothing before it) is repeated. The stream has no end; a reader must stop
/// before it runs out.
pub fn gzip_bomb(prefix: &[u8], zero_mib: usize) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut seg = |input: &[u8]| {
        let mut out = Vec::with_capacity(input.len() / 8 + 1024);
        let before = c.total_in();
        loop {
            let consumed = (c.total_in() - before) as usize;
            out.reserve(64 * 1024);
            c.compress_vec(&input[consumed..], &mut out, FlushCompress::Full)
                .unwrap();
            if (c.total_in() - before) as usize == input.len() && out.capacity() > out.len() {
                break;
            }
        }
        out
    };
    let head = seg(prefix);
    let zeros = seg(&vec![0u8; 1 << 20]);
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    gz.extend_from_slice(&head);
    for _ in 0..zero_mib {
        gz.extend_from_slice(&zeros);
    }
    gz
}
