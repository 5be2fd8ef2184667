//! Human output: aligned columns, like `cilium endpoint list`.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                // Multi-line cells (label lists) are as wide as their widest line.
                let cw = c.lines().map(str::len).max().unwrap_or(0);
                if i < w.len() {
                    w[i] = w[i].max(cw);
                }
            }
        }
        let line = |cells: &[String]| {
            let lines: Vec<Vec<&str>> = cells.iter().map(|c| c.lines().collect()).collect();
            let height = lines.iter().map(|l| l.len()).max().unwrap_or(1).max(1);
            for k in 0..height {
                let parts: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        format!("{:<width$}", l.get(k).copied().unwrap_or(""), width = w[i])
                    })
                    .collect();
                println!("{}", parts.join("   ").trim_end());
            }
        };
        line(&self.header);
        for r in &self.rows {
            line(r);
        }
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
