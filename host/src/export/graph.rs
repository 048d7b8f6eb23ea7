//! The LLaMA network as an ONNX graph (opset 17) with a KV cache, in the layout Hugging
//! Face's exporters use: inputs `input_ids`, `attention_mask`, `position_ids` and
//! `past_key_values.N.key/value`; outputs `logits` and `present.N.key/value`; batch and
//! sequence axes dynamic.

use super::proto::Msg;

/// ONNX element types.
pub const FLOAT: i64 = 1;
pub const INT64: i64 = 7;
const FLOAT16: i64 = 10;
const INT8: i64 = 3;
/// The largest weight code of the int8 products (7 bits: see `Graph::matmul_int8`).
const WEIGHT_LEVELS: f32 = 63.0;
const UINT8: i64 = 2;
/// ONNX Runtime's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

/// A dimension: fixed or named (dynamic).
pub enum Dim<'a> {
    /// A fixed size.
    Fixed(usize),
    /// A named dynamic axis.
    Named(&'a str),
}

/// A graph being built.
pub struct Graph {
    nodes: Vec<Msg>,
    inits: Vec<Msg>,
    inputs: Vec<Msg>,
    outputs: Vec<Msg>,
    count: usize,
    /// Operator domains used besides the default one.
    domains: Vec<String>,
    /// Store float weights as f16 (cast to f32 when loaded).
    pub f16: bool,
}

/// How the linear layers' weights are stored and multiplied (`export.precision`,
/// `--precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32.
    #[default]
    F32,
    /// f16 storage, f32 compute.
    F16,
    /// int8 weights (per output column) after SmoothQuant scaling, activations quantized to 8
    /// bits at run time (per token for o_proj and down_proj, per tensor elsewhere).
    Int8,
}

crate::config::display_as_value_name!(Precision);

fn attr_int(name: &str, v: i64) -> Msg {
    Msg::default().str(1, name).int(20, 2).int(3, v)
}

fn attr_ints(name: &str, vs: &[i64]) -> Msg {
    vs.iter().fold(Msg::default().str(1, name).int(20, 7), |m, v| m.int(8, *v))
}

fn value_info(name: &str, elem: i64, dims: &[Dim]) -> Msg {
    let shape = dims.iter().fold(Msg::default(), |m, d| {
        let dim = match d {
            Dim::Fixed(n) => Msg::default().int(1, *n as i64),
            Dim::Named(s) => Msg::default().str(2, s),
        };
        m.msg(1, &dim)
    });
    let tensor = Msg::default().int(1, elem).msg(2, &shape);
    Msg::default().str(1, name).msg(2, &Msg::default().msg(1, &tensor))
}

fn tensor(name: &str, dims: &[usize], elem: i64, raw: &[u8]) -> Msg {
    dims.iter().fold(Msg::default(), |m, d| m.int(1, *d as i64)).int(2, elem).str(8, name).bytes(9, raw)
}

impl Graph {
    /// An empty graph.
    pub fn new(f16: bool) -> Self {
        Self { nodes: Vec::new(), inits: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), count: 0, domains: Vec::new(), f16 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.count += 1;
        format!("{hint}_{}", self.count)
    }

    /// A node with one output named `out`.
    pub fn node_to(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<Msg>) {
        let mut m = Msg::default();
        for i in inputs {
            m = m.str(1, i);
        }
        m = m.str(2, out).str(3, &format!("{op}_{}", self.nodes.len())).str(4, op);
        for a in &attrs {
            m = m.msg(5, a);
        }
        self.nodes.push(m);
    }

    /// A node with several fresh outputs; returns their names.
    pub fn node_n(&mut self, op: &str, inputs: &[&str], n: usize) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_lowercase())).collect();
        let mut m = Msg::default();
        for i in inputs {
            m = m.str(1, i);
        }
        for o in &outs {
            m = m.str(2, o);
        }
        m = m.str(3, &format!("{op}_{}", self.nodes.len())).str(4, op);
        self.nodes.push(m);
        outs
    }

    /// `x · W` for a weight `W` (in, out) quantized per output column to 7 bits (codes within
    /// ±63 of int8) and `x` quantized at run time to 8 bits, with one scale per row (token) when
    /// `per_row`, else one for the whole tensor.
    ///
    /// 7-bit weights, as ONNX Runtime's quantizer's `reduce_range`: on x86 processors without
    /// VNNI its u8 × s8 product adds pairs of products in saturating 16-bit lanes, and two
    /// 255 × 127 products overflow them (on a 2-core AMD EPYC with AVX2 only, SmolLM2's
    /// yes/no/maybe moved by 0.19 from candle's); two 255 × 63 products do not.
    ///
    /// Per tensor is `DynamicQuantizeLinear` + `MatMulInteger`, which ONNX Runtime fuses into
    /// one int8 product. Per row is `Abs`, `ReduceMax`, `Div`, `Round`, `Cast` to codes around
    /// 128, then ONNX Runtime's `MatMulIntegerToFloat` and the row scales: about three times
    /// the cost, for inputs whose rows differ by orders of magnitude.
    pub fn matmul_int8(&mut self, x: &str, name: &str, rows: usize, cols: usize, w: &[f32], per_row: bool) -> String {
        let mut scales = vec![0f32; cols];
        for r in 0..rows {
            for c in 0..cols {
                scales[c] = scales[c].max(w[r * cols + c].abs() / WEIGHT_LEVELS);
            }
        }
        let q: Vec<u8> = (0..rows * cols)
            .map(|i| {
                let s = scales[i % cols];
                (if s > 0.0 { (w[i] / s).round().clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) } else { 0.0 } as i8) as u8
            })
            .collect();
        let wq = format!("{name}.int8");
        self.inits.push(tensor(&wq, &[rows, cols], INT8, &q));
        let ws = format!("{name}.scale");
        let raw: Vec<u8> = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(tensor(&ws, &[cols], FLOAT, &raw));
        if !per_row {
            let parts = self.node_n("DynamicQuantizeLinear", &[x], 3);
            let y = self.node("MatMulInteger", &[&parts[0], &wq, &parts[2]], vec![]);
            let yf = self.cast(&y, FLOAT);
            let scale = self.node("Mul", &[&parts[1], &ws], vec![]);
            return self.node("Mul", &[&yf, &scale], vec![]);
        }
        let a = self.node("Abs", &[x], vec![]);
        let m = self.node("ReduceMax", &[&a], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
        let (tiny, step, mid, one) = (self.scalar(1e-30), self.scalar(1.0 / 127.0), self.scalar(128.0), self.scalar(1.0));
        let m = self.node("Max", &[&m, &tiny], vec![]);
        let row_scale = self.node("Mul", &[&m, &step], vec![]);
        let r = self.node("Div", &[x, &row_scale], vec![]);
        let r = self.node("Round", &[&r], vec![]);
        let r = self.node("Add", &[&r, &mid], vec![]);
        let codes = self.cast(&r, UINT8);
        let zero = self.fresh("zero_point");
        self.inits.push(tensor(&zero, &[], UINT8, &[128]));
        let y = self.fresh("matmulintegertofloat");
        self.node_in(MS_DOMAIN, "MatMulIntegerToFloat", &[&codes, &wq, &one, &ws, &zero], &y);
        self.node("Mul", &[&y, &row_scale], vec![])
    }

    /// A node of another operator domain (ONNX Runtime's `com.microsoft`) with one output.
    fn node_in(&mut self, domain: &str, op: &str, inputs: &[&str], out: &str) {
        self.node_to(op, inputs, out, vec![]);
        if let Some(n) = self.nodes.pop() {
            self.nodes.push(n.str(7, domain));
        }
        if !self.domains.iter().any(|d| d == domain) {
            self.domains.push(domain.to_owned());
        }
    }

    /// A node with one fresh output; returns its name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Msg>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_to(op, inputs, &out, attrs);
        out
    }

    /// A float weight.
    pub fn weight(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        if self.f16 {
            let raw: Vec<u8> = data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            let stored = format!("{name}.f16");
            self.inits.push(tensor(&stored, dims, FLOAT16, &raw));
            self.node_to("Cast", &[&stored], name, vec![attr_int("to", FLOAT)]);
        } else {
            let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.inits.push(tensor(name, dims, FLOAT, &raw));
        }
        name.to_owned()
    }

    /// An int64 constant (dims empty: a scalar).
    pub fn ints(&mut self, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh("const");
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(tensor(&name, dims, INT64, &raw));
        name
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("const");
        self.inits.push(tensor(&name, &[], FLOAT, &v.to_le_bytes()));
        name
    }

    /// A graph input.
    pub fn input(&mut self, name: &str, elem: i64, dims: &[Dim]) {
        self.inputs.push(value_info(name, elem, dims));
    }

    /// A graph output.
    pub fn output(&mut self, name: &str, elem: i64, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    /// The serialized `ModelProto` (IR version 8, opset 17).
    pub fn model(self, doc: &str) -> Vec<u8> {
        let mut g = Msg::default();
        for n in &self.nodes {
            g = g.msg(1, n);
        }
        g = g.str(2, "medtune");
        for t in &self.inits {
            g = g.msg(5, t);
        }
        for i in &self.inputs {
            g = g.msg(11, i);
        }
        for o in &self.outputs {
            g = g.msg(12, o);
        }
        let opset = Msg::default().str(1, "").int(2, 17);
        let mut m = Msg::default().int(1, 8).str(2, "medtune").str(3, env!("CARGO_PKG_VERSION")).str(6, doc).msg(7, &g).msg(8, &opset);
        for d in &self.domains {
            m = m.msg(8, &Msg::default().str(1, d).int(2, 1));
        }
        m.0
    }

    // ops with attributes

    /// `Transpose` with a permutation.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    /// `Unsqueeze` at `axes`.
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.ints(&[axes.len()], axes);
        self.node("Unsqueeze", &[x, &a], vec![])
    }

    /// `Reshape` to `shape` (0 copies the input's dimension, -1 is inferred).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.ints(&[shape.len()], shape);
        self.node("Reshape", &[x, &s], vec![])
    }

    /// `Slice` of the last axis `[start, end)`.
    pub fn slice_last(&mut self, x: &str, start: i64, end: i64) -> String {
        self.slice(x, -1, start, end)
    }

    /// `x[.., start..end, ..]` along `axis` (negative indices count from the end).
    pub fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let (s, e, a) = (self.ints(&[1], &[start]), self.ints(&[1], &[end]), self.ints(&[1], &[axis]));
        self.node("Slice", &[x, &s, &e, &a], vec![])
    }

    /// `Concat` along `axis`.
    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.node("Concat", xs, vec![attr_int("axis", axis)])
    }

    /// `Concat` along `axis` into a named output.
    pub fn concat_to(&mut self, xs: &[&str], out: &str, axis: i64) {
        self.node_to("Concat", xs, out, vec![attr_int("axis", axis)]);
    }

    /// Element `index` of `x`'s shape, as a scalar.
    pub fn dim(&mut self, x: &str, index: i64) -> String {
        let shape = self.node("Shape", &[x], vec![]);
        let i = self.ints(&[], &[index]);
        self.node("Gather", &[&shape, &i], vec![attr_int("axis", 0)])
    }

    /// RMSNorm: `x / sqrt(mean(x²) + eps) * w`.
    pub fn rms_norm(&mut self, x: &str, w: &str, eps: f32) -> String {
        let sq = self.node("Mul", &[x, x], vec![]);
        let mean = self.node("ReduceMean", &[&sq], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
        let e = self.scalar(eps);
        let var = self.node("Add", &[&mean, &e], vec![]);
        let root = self.node("Sqrt", &[&var], vec![]);
        let normed = self.node("Div", &[x, &root], vec![]);
        self.node("Mul", &[&normed, w], vec![])
    }

    /// `Cast` to an element type.
    pub fn cast(&mut self, x: &str, to: i64) -> String {
        self.node("Cast", &[x], vec![attr_int("to", to)])
    }

    /// `Softmax` over the last axis.
    pub fn softmax(&mut self, x: &str) -> String {
        self.node("Softmax", &[x], vec![attr_int("axis", -1)])
    }
}
