//! `reincarnate slurm FILE`: an experiment as Slurm job arrays. Every stage with units of work
//! becomes one array (`STAGE.sbatch`, task `i` runs `reincarnate run FILE --shard auto/N --stage
//! STAGE`), submitted after the arrays of the stages it reads (`--dependency=afterok`); a last
//! job runs `reincarnate report FILE`. The files go to `runs/NAME/slurm/`, with `submit.sh`
//! that submits them in order.

use super::{experiment_root, inputs, items, owners, Experiment};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// How the arrays are laid out.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Slices every stage's grid is split into (the largest array's size).
    pub slices: usize,
    pub cpus_per_task: usize,
    pub partition: Option<String>,
    /// Time limit of each task (`--time`), e.g. `02:00:00`.
    pub time: Option<String>,
    /// The `reincarnate` binary the tasks run.
    pub binary: PathBuf,
    /// The experiment file, as the tasks will read it.
    pub experiment_file: PathBuf,
    /// `--set` overrides, passed on to every task.
    pub overrides: Vec<String>,
    /// Where the tasks start (relative paths in the experiment resolve from here).
    pub workdir: PathBuf,
}

/// The job files of an experiment and the script that submits them.
#[derive(Clone, Debug)]
pub struct SlurmPlan {
    /// `runs/NAME/slurm/`.
    pub dir: PathBuf,
    /// (file name, contents) of each `STAGE.sbatch` and `report.sbatch`.
    pub jobs: Vec<(String, String)>,
    /// `submit.sh`.
    pub submit: String,
}

/// Quotes `s` for a POSIX shell (unchanged when it needs no quoting).
pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(workdir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workdir.join(p)
    }
}

/// Lays out `exp` as job arrays (nothing is written or submitted).
pub fn plan(exp: &Experiment, default_name: &str, o: &SlurmOptions) -> Result<SlurmPlan> {
    if o.slices == 0 || o.cpus_per_task == 0 {
        return Err(Error::Config(
            "--slices and --cpus-per-task must be at least 1".into(),
        ));
    }
    if exp.stages.iter().any(|s| s.name() == "slurm") {
        return Err(Error::Config(
            "a stage named `slurm` would share runs/NAME/slurm/ with the job files; rename the stage"
                .into(),
        ));
    }
    let root = absolute(&o.workdir, &experiment_root(exp, default_name));
    let dir = root.join("slurm");
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| default_name.to_string());
    let file = absolute(&o.workdir, &o.experiment_file);
    let sets: String = o
        .overrides
        .iter()
        .map(|s| format!(" --set {}", sh_quote(s)))
        .collect();
    let header = |job: &str, out: &str, array: Option<&[usize]>| {
        let mut h = format!(
            "#!/usr/bin/env bash\n#SBATCH --job-name={}\n",
            sh_quote(&format!("{name}.{job}"))
        );
        if let Some(tasks) = array {
            let list: Vec<String> = tasks.iter().map(usize::to_string).collect();
            h += &format!("#SBATCH --array={}\n", list.join(","));
        }
        h += &format!("#SBATCH --cpus-per-task={}\n", o.cpus_per_task);
        h += &format!(
            "#SBATCH --output={}\n",
            sh_quote(&dir.join(out).display().to_string())
        );
        if let Some(p) = &o.partition {
            h += &format!("#SBATCH --partition={}\n", sh_quote(p));
        }
        if let Some(t) = &o.time {
            h += &format!("#SBATCH --time={}\n", sh_quote(t));
        }
        h
    };
    let body = |args: &str| {
        format!(
            "set -euo pipefail\ncd {}\nexport RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\nexec {} {args}{sets}\n",
            sh_quote(&o.workdir.display().to_string()),
            sh_quote(&o.binary.display().to_string()),
        )
    };
    let mut jobs = Vec::new();
    let mut submit = format!(
        "#!/usr/bin/env bash\n# Submits experiment `{name}` ({}) as Slurm job arrays, each stage after the stages\n# it reads, then the merged report. Written by `reincarnate slurm`.\nset -euo pipefail\nS={}\n",
        file.display(),
        sh_quote(&dir.display().to_string())
    );
    // The job variable of each stage that has one.
    let mut vars: Vec<(&str, String)> = Vec::new();
    for (i, stage) in exp.stages.iter().enumerate() {
        let units = items(stage, exp.seed, o.slices).len();
        if units == 0 {
            continue;
        }
        let slices_used = owners(i, units, o.slices);
        let tasks = slices_used.len();
        let s = stage.name();
        let text = format!(
            "{}# Stage `{s}` of {} ({units} units of work over {} slices): array task i runs the\n# units k with (k + {i}) mod {} = i. Resubmit one task alone with: sbatch --array=i {}\n{}",
            header(s, &format!("{s}-%a.out"), Some(&slices_used)),
            file.display(),
            o.slices,
            o.slices,
            dir.join(format!("{s}.sbatch")).display(),
            body(&format!(
                "run {} --shard auto/{} --stage {}",
                sh_quote(&file.display().to_string()),
                o.slices,
                sh_quote(s)
            )),
        );
        jobs.push((format!("{s}.sbatch"), text));
        let deps: Vec<String> = inputs(exp, stage)
            .iter()
            .filter_map(|input| vars.iter().find(|(n, _)| *n == input.name()))
            .map(|(_, v)| format!("${v}"))
            .collect();
        let var = format!("j{i}");
        let dependency = if deps.is_empty() {
            String::new()
        } else {
            format!(" --dependency=afterok:{}", deps.join(":"))
        };
        submit += &format!(
            "{var}=$(sbatch --parsable{dependency} \"$S/{s}.sbatch\"); {var}=${{{var}%%;*}}\necho \"stage {s}: job ${var} ({tasks} array tasks)\"\n"
        );
        vars.push((s, var));
    }
    let report = format!(
        "{}# Merges the slices of {} into runs/{name}/summary.json, its tables and plots.\n{}",
        header("report", "report.out", None),
        file.display(),
        body(&format!("report {}", sh_quote(&file.display().to_string())))
    );
    jobs.push(("report.sbatch".into(), report));
    let all: Vec<String> = vars.iter().map(|(_, v)| format!("${v}")).collect();
    let dependency = if all.is_empty() {
        String::new()
    } else {
        format!(" --dependency=afterok:{}", all.join(":"))
    };
    submit += &format!(
        "report=$(sbatch --parsable{dependency} \"$S/report.sbatch\"); report=${{report%%;*}}\necho \"report: job $report (runs when every array task has succeeded; after a failed task, resubmit it with sbatch --array=i \\\"$S/STAGE.sbatch\\\" and run reincarnate report)\"\n"
    );
    Ok(SlurmPlan { dir, jobs, submit })
}

impl SlurmPlan {
    /// Writes the job files and `submit.sh`; returns the path of `submit.sh`.
    pub fn write(&self) -> Result<PathBuf> {
        crate::fs::create_dir_all(&self.dir)?;
        for (name, text) in &self.jobs {
            crate::fs::write_atomic(&self.dir.join(name), text.as_bytes())?;
        }
        let submit = self.dir.join("submit.sh");
        crate::fs::write_atomic(&submit, self.submit.as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&submit, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(&submit, e))?;
        }
        Ok(submit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(sh_quote("runs/a-b_1.toml"), "runs/a-b_1.toml");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("stage.1.seeds=[0,1]"), "'stage.1.seeds=[0,1]'");
    }

    #[test]
    fn stages_become_arrays_after_the_stages_they_read() {
        let exp: Experiment = toml::from_str(
            r#"
name = "grid"
[[stage]]
name = "teacher"
kind = "train"
env = "cartpole"
algo = "dqn"
[[stage]]
name = "students"
kind = "reincarnate"
env = "cartpole"
teacher = "stage:teacher"
methods = ["qdagger", "tabula_rasa", "kickstart"]
seeds = [0, 1, 2]
[[stage]]
name = "summary"
kind = "reincarnation_summary"
stages = ["students"]
"#,
        )
        .unwrap();
        let o = SlurmOptions {
            slices: 4,
            cpus_per_task: 1,
            partition: Some("cpu".into()),
            time: None,
            binary: "/opt/bin/reincarnate".into(),
            experiment_file: "exp.toml".into(),
            overrides: vec!["stage.1.seeds=[0, 1]".into()],
            workdir: "/work/project".into(),
        };
        let p = plan(&exp, "x", &o).unwrap();
        assert_eq!(p.dir, Path::new("/work/project/runs/grid/slurm"));
        let names: Vec<&str> = p.jobs.iter().map(|j| j.0.as_str()).collect();
        assert_eq!(
            names,
            ["teacher.sbatch", "students.sbatch", "report.sbatch"]
        );
        let teacher = &p.jobs[0].1;
        assert!(teacher.contains("#SBATCH --array=0\n"), "{teacher}");
        assert!(teacher.contains("#SBATCH --partition=cpu\n"), "{teacher}");
        let students = &p.jobs[1].1;
        assert!(students.contains("#SBATCH --array=0,1,2,3\n"), "{students}");
        assert!(students.contains("(k + 1) mod 4 = i"), "{students}");
        assert!(
            students.contains(
                "exec /opt/bin/reincarnate run /work/project/exp.toml --shard auto/4 --stage students --set 'stage.1.seeds=[0, 1]'\n"
            ),
            "{students}"
        );
        assert!(!p.jobs[2].1.contains("--array"), "{}", p.jobs[2].1);
        // The students wait for the teacher; the report for both arrays.
        assert!(
            p.submit
                .contains("j0=$(sbatch --parsable \"$S/teacher.sbatch\")"),
            "{}",
            p.submit
        );
        assert!(
            p.submit.contains(
                "j1=$(sbatch --parsable --dependency=afterok:$j0 \"$S/students.sbatch\")"
            ),
            "{}",
            p.submit
        );
        assert!(
            p.submit
                .contains("--dependency=afterok:$j0:$j1 \"$S/report.sbatch\""),
            "{}",
            p.submit
        );
        assert!(plan(
            &exp,
            "x",
            &SlurmOptions {
                slices: 0,
                ..o.clone()
            }
        )
        .is_err());
        let mut clash = exp.clone();
        if let crate::experiment::Stage::ReincarnationSummary(s) = &mut clash.stages[2] {
            s.name = "slurm".into();
        }
        let e = plan(&clash, "x", &o).unwrap_err().to_string();
        assert!(e.contains("`slurm`"), "{e}");
    }
}
