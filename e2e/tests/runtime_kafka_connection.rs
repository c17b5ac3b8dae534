//! A runtime that cannot talk to Kafka says why, against the real (PLAINTEXT) Kafka of the
//! harness: a client configured for TLS fails its handshake, and the error the ingest
//! stops with names the handshake, not just a timeout. librdkafka's admin client only
//! times out (it does not poll the queue its connection errors go to), so a second client
//! is asked (`pipeline_runtime::kafka::broker_error`).

use std::time::Duration;

use anyhow::Result;
use e2e::runtime::{kafka_settings, unique_name};
use pipeline_runtime::config::SecurityProtocol;
use pipeline_runtime::kafka::{broker_error, ensure_topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_protocol_is_told_why_it_cannot_connect() -> Result<()> {
    e2e::k8s::init_logging();
    // Kafka alone (not `Endpoints`, which wants every server of the harness).
    let right = kafka_settings(
        &e2e::k8s::service_setting("KAFKA_BOOTSTRAP")?,
        &unique_name("e2e-connect"),
    );

    let probe = right.clone();
    let answered =
        tokio::task::spawn_blocking(move || broker_error(&probe, Duration::from_secs(10))).await?;
    assert_eq!(answered, None, "the harness's Kafka answers in PLAINTEXT");

    let mut wrong = right.clone();
    wrong.security_protocol = SecurityProtocol::Ssl;
    let probe = wrong.clone();
    let reason = tokio::task::spawn_blocking(move || broker_error(&probe, Duration::from_secs(10)))
        .await?
        .expect("a reason");
    // librdkafka words it "SSL handshake failed: ..." or "Disconnected: SSL connection
    // closed by peer", both ending "(after Nms in state SSL_HANDSHAKE)".
    assert!(reason.contains("in state SSL_HANDSHAKE"), "{reason}");
    assert!(reason.contains(&right.bootstrap), "{reason}");

    let topic = right.events_topic.clone();
    let error = ensure_topics(&wrong, &[topic.as_str()], 1, 1)
        .await
        .expect_err("no broker speaks TLS");
    let message = error.to_string();
    assert!(
        message.starts_with("kafka: create topics: ")
            && message.contains("; connecting to the brokers: ")
            && message.contains("in state SSL_HANDSHAKE"),
        "{message}"
    );
    Ok(())
}
