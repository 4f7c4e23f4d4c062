//! One JSON object per line for every measurement, as PRODUCT.md specifies.

use serde_json::{Map, Value, json};

/// Whether a bigger or a smaller value is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// One measurement, printed with [`Line::print`].
#[derive(Debug)]
pub(crate) struct Line {
    fields: Map<String, Value>,
}

impl Line {
    pub(crate) fn new(bench: &str, system: &str, metric: &str, value: f64, unit: &str) -> Self {
        let line = json!({
            "bench": bench, "system": system, "metric": metric, "value": round(value), "unit": unit,
        });
        let Value::Object(fields) = line else {
            unreachable!("json! of an object literal is an object")
        };
        Self { fields }
    }

    /// Adds `ratio_vs_<anchor>` as "how many times better than the anchor" (so above 1
    /// is better whichever direction the metric goes), and says which direction that is.
    pub(crate) fn ratio(mut self, anchor: &str, ours: f64, theirs: f64, better: Better) -> Self {
        let ratio = match better {
            Better::Higher => ours / theirs,
            Better::Lower => theirs / ours,
        };
        self.fields
            .insert(format!("ratio_vs_{anchor}"), Value::from(round(ratio)));
        let direction = match better {
            Better::Higher => "higher value is better; ratio = ours / anchor",
            Better::Lower => "lower value is better; ratio = anchor / ours",
        };
        self.fields
            .insert("better".to_owned(), Value::from(direction));
        self
    }

    /// Adds any other field.
    pub(crate) fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    pub(crate) fn print(self) {
        println!("{}", Value::Object(self.fields));
    }
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}
