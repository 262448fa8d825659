//! `nnc-example MODEL.so [THREADS]`: loads a library compiled by nnc, prints
//! its signature, runs it once on deterministic pseudo-random inputs and
//! summarizes the outputs. THREADS defaults to the number of cores.

use std::process::ExitCode;
use std::time::Instant;

use nnc_runtime::{DType, Model, Tensor, ThreadPool};

/// Numerical Recipes LCG: deterministic inputs without a `rand` dependency,
/// so two runs (or two machines) can be compared value for value.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

fn usage() -> String {
    "usage: nnc-example MODEL.so [THREADS]".to_string()
}

fn parse_args() -> Result<(String, Option<usize>), String> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or_else(usage)?;
    if model == "-h" || model == "--help" {
        return Err(usage());
    }
    let threads = match args.next() {
        None => None,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("THREADS must be a positive integer, got `{s}`")),
        },
    };
    if args.next().is_some() {
        return Err(usage());
    }
    Ok((model, threads))
}

/// Indices of the `k` largest values, largest first (NaNs last).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (values[a], values[b]);
        vb.partial_cmp(&va)
            .unwrap_or_else(|| va.is_nan().cmp(&vb.is_nan()))
    });
    idx.truncate(k);
    idx
}

fn head(t: &Tensor, n: usize) -> String {
    if let Some(v) = t.as_f32() {
        format!("{:?}", &v[..v.len().min(n)])
    } else if let Some(v) = t.as_i64() {
        format!("{:?}", &v[..v.len().min(n)])
    } else if let Some(v) = t.to_bools() {
        format!("{:?}", &v[..v.len().min(n)])
    } else {
        String::new()
    }
}

fn run() -> Result<(), String> {
    let (path, threads) = parse_args()?;
    let model = Model::load(&path).map_err(|e| e.to_string())?;
    let info = model.info();

    println!("model:     {path}");
    println!("producer:  {}", info.producer);
    println!(
        "workspace: {} bytes (align {})",
        info.workspace_size, info.workspace_align
    );
    for (kind, list) in [("input ", &info.inputs), ("output", &info.outputs)] {
        for t in list {
            println!("{kind}    {} {} {:?}", t.name, t.dtype, t.shape);
        }
    }

    let mut rng = Lcg(0x5eed);
    let mut inputs = Vec::with_capacity(info.inputs.len());
    for t in &info.inputs {
        let tensor = match t.dtype {
            DType::F32 => {
                let data = (0..t.numel()).map(|_| rng.next_f32()).collect();
                Tensor::from_f32(&t.shape, data)
            }
            // Integer and bool inputs are usually indices or masks whose
            // valid range we cannot guess: zeros are always in range.
            _ => {
                println!("note: filling {} input `{}` with zeros", t.dtype, t.name);
                t.zeros()
            }
        };
        inputs.push(tensor.map_err(|e| e.to_string())?);
    }

    let pool = ThreadPool::new(
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );
    let mut ws = model.new_workspace().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let outputs = model
        .run_with(&inputs, &mut ws, Some(&pool))
        .map_err(|e| e.to_string())?;
    println!(
        "ran in {:.3} ms on {} thread(s)",
        start.elapsed().as_secs_f64() * 1e3,
        pool.num_threads()
    );

    for (t, out) in info.outputs.iter().zip(&outputs) {
        println!("output `{}` {} {:?}", t.name, out.dtype(), out.shape());
        println!("  first values: {}", head(out, 8));
        if let (Some(v), [1, n]) = (out.as_f32(), out.shape()) {
            if *n > 1 {
                let top = top_k(v, 5);
                println!("  top-1: {}", top[0]);
                println!("  top-5: {top:?}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nnc-example: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcg_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Lcg(1), Lcg(1));
        for _ in 0..1000 {
            let x = a.next_f32();
            assert_eq!(x, b.next_f32());
            assert!((-1.0..1.0).contains(&x));
        }
    }

    #[test]
    fn top_k_orders_and_handles_nan() {
        assert_eq!(top_k(&[0.1, 3.0, -1.0, 2.0], 2), vec![1, 3]);
        assert_eq!(top_k(&[f32::NAN, 1.0, 2.0], 3), vec![2, 1, 0]);
        assert_eq!(top_k(&[1.0], 5), vec![0]);
    }
}
