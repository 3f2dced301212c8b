//! Benchmark: durable acceptance of 256-byte messages through the group-commit writer
//! (SQLite WAL, synchronous=FULL), with 1 and with many concurrent producers, and the
//! fsync latency of the disk it ran on (a figure means little without it).
//!
//! `cargo run --release -p reeve-delivery --example durable_throughput [-- DIR]`
//! (DIR: where to put the database; default a temporary directory. Run it under an
//! LD_PRELOAD fsync-delay shim to see what an SD card does.)

use reeve_delivery::envelope::StreamId;
use reeve_delivery::keys::KeyPair;
use reeve_delivery::writer::Writer;
use std::io::Write;
use std::time::Instant;

fn fsync_latency_us(dir: &std::path::Path) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&[0u8; 256])?;
        f.sync_data()?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    std::fs::remove_file(&path)?;
    Ok(us)
}

async fn run(
    dir: &std::path::Path,
    producers: usize,
    per_producer: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let db = dir.join(format!("bench-{producers}.db"));
    let _ = std::fs::remove_file(&db);
    let w = Writer::open(&db)?;
    let owner = KeyPair::generate()?;
    let stream = StreamId {
        owner: owner.public(),
        instance: "bench".into(),
        receiver: "n1".into(),
        lane: Default::default(),
    };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (w, s) = (w.clone(), stream.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer {
                w.enqueue(s.clone(), format!("{p}-{i}"), u64::MAX, |_| vec![7u8; 256])
                    .await?;
            }
            Ok::<_, reeve_delivery::writer::WriterError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((producers * per_producer) as f64 / t.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let fsync = fsync_latency_us(&dir)?;
    println!(
        "fsync (fdatasync of 256 B) on {}: {:.0} us",
        dir.display(),
        fsync
    );
    println!(
        "{:>10} {:>12} {:>14}",
        "producers", "messages", "accepted/s"
    );
    for (producers, each) in [(1, 500), (16, 500), (256, 200), (1024, 50)] {
        let rate = run(&dir, producers, each).await?;
        println!("{producers:>10} {:>12} {rate:>14.0}", producers * each);
    }
    Ok(())
}
