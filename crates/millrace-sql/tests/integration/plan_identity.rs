//! Stable operator ids and the plan fingerprint: the same file plans to
//! the same ids and fingerprint; a change that alters an operator's state
//! changes that operator's hash, and the mismatch names it.

use millrace_sql::SqlPipeline;

fn q5_with(size: &str) -> String {
    let path = format!(
        "{}/../../queries/nexmark/q5.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let sql = std::fs::read_to_string(path).unwrap();
    sql.replace("INTERVAL '10' SECOND", &format!("INTERVAL '{size}' SECOND"))
}

#[test]
fn the_same_file_plans_to_the_same_ids_and_fingerprint() {
    let sql = q5_with("10");
    let a = SqlPipeline::plan(&sql).unwrap().fingerprint();
    let b = SqlPipeline::plan(&sql).unwrap().fingerprint();
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.mismatch(&b), None);
    assert!(a.operators.len() > 3);
}

#[test]
fn a_changed_window_changes_the_fingerprint_and_names_the_operator() {
    let a = SqlPipeline::plan(&q5_with("10")).unwrap().fingerprint();
    let b = SqlPipeline::plan(&q5_with("20")).unwrap().fingerprint();
    assert_ne!(a.digest(), b.digest());
    let why = a.mismatch(&b).expect("a mismatch");
    assert!(why.contains("changed") || why.contains("new plan"), "{why}");
    // The ids name the operators, so the message says which one.
    assert!(why.contains("window") || why.contains("hop"), "{why}");
}
