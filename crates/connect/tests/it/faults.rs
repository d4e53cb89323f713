//! Faults: the database stopped, restarted (`-m fast`, `-m immediate`), the provider slow or
//! failing, and replicas killed mid-refresh. Each test owns a throwaway PostgreSQL cluster, so
//! stopping it disturbs nothing else.

use crate::cluster::Cluster;

#[tokio::test]
async fn a_test_cluster_survives_fast_and_immediate_restarts() {
    let cluster = Cluster::start("postgres");
    cluster
        .exec(
            "postgres",
            "create table t (n int); insert into t values (1)",
        )
        .await;
    cluster.stop_server("fast");
    cluster.start_server();
    cluster.exec("postgres", "insert into t values (2)").await;
    cluster.stop_server("immediate");
    cluster.start_server();
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.url("postgres", "postgres"))
            .await
            .unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2, "committed rows survive an immediate stop");
    assert!(cluster.log().contains("database system is ready"));
}
