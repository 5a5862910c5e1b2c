//! AddImages streams that go wrong part way, on a real registry-backed server: a refused
//! message (an undecodable image, a raw image of the wrong size) is named with its index, and
//! the job holds exactly the messages before it; a client that goes away mid-stream leaves
//! whole messages only; sending everything again completes the job without a duplicate.

mod common;

use aelabel::client::Connection;
use aelabel::service::{JobWorkerConfig, ModelSource, ServeConfig};
use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::server::{config, raw_image, register_test_model, test_images, TestServer};
use common::{eventually, within};
use std::time::Duration;

/// Messages in a full stream.
const MESSAGES: usize = 100;
/// Images per message.
const PER_MESSAGE: usize = 10;
/// How long any step may take.
const LIMIT: Duration = Duration::from_secs(60);

async fn server(db: &TestDb) -> TestServer {
    register_test_model(&db.url).await;
    TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: db.url.clone(),
                poll: Duration::from_secs(1),
            },
            jobs: JobWorkerConfig::default(),
            ..config()
        },
        true,
    )
    .await
}

async fn new_job(client: &mut LabelJobsClient<Connection>) -> String {
    client
        .create_job(pb::CreateJobRequest {
            name: "streams".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// Message `m` (from 0) of the full stream: images `m * PER_MESSAGE ..`, ids `img-{i}`.
fn message(job_id: &str, pixels: &[u8], m: usize) -> pb::AddImagesRequest {
    pb::AddImagesRequest {
        job_id: job_id.to_string(),
        images: (m * PER_MESSAGE..(m + 1) * PER_MESSAGE)
            .map(|i| raw_image(&format!("img-{i}"), &pixels[i * 784..(i + 1) * 784]))
            .collect(),
    }
}

fn all_messages(job_id: &str, pixels: &[u8]) -> Vec<pb::AddImagesRequest> {
    (0..MESSAGES).map(|m| message(job_id, pixels, m)).collect()
}

/// The ids the job holds, in the order they were added.
async fn job_ids(client: &mut LabelJobsClient<Connection>, job_id: &str) -> Vec<String> {
    let mut stream = client
        .export_labels(pb::ExportLabelsRequest {
            job_id: job_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(row) = stream.message().await.unwrap() {
        ids.push(row.id);
    }
    ids
}

/// The ids of the first `messages` messages.
fn ids_of_messages(messages: usize) -> Vec<String> {
    (0..messages * PER_MESSAGE)
        .map(|i| format!("img-{i}"))
        .collect()
}

async fn counts(client: &mut LabelJobsClient<Connection>, job_id: &str) -> pb::JobCounts {
    client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .counts
        .unwrap()
}

/// Sends `messages`; the refusal's status.
async fn refused(
    client: &mut LabelJobsClient<Connection>,
    messages: Vec<pb::AddImagesRequest>,
) -> tonic::Status {
    within(LIMIT, client.add_images(tokio_stream::iter(messages)))
        .await
        .expect_err("the stream is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_message_keeps_exactly_the_messages_before_it() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let mut client = LabelJobsClient::new(server.channel().await);
    let job_id = new_job(&mut client).await;
    let (pixels, _) = test_images(MESSAGES * PER_MESSAGE);

    // Message 37 (counting from 1) holds an undecodable image at index 3.
    let mut messages = all_messages(&job_id, &pixels);
    messages[36].images[3].data = Some(pb::image::Data::Encoded(b"not an image".to_vec().into()));
    let status = refused(&mut client, messages).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("AddImages message 37: images[3]"),
        "{status:?}"
    );
    assert!(
        status.message().contains(
            "the job kept messages 1–36 (360 added, 0 duplicates); send again from message 37"
        ),
        "{status:?}"
    );
    assert_eq!(job_ids(&mut client, &job_id).await, ids_of_messages(36));

    // A raw image whose pixels do not fill its size, in message 37 after the 36 the job holds.
    let mut messages = all_messages(&job_id, &pixels);
    messages[36].images[3].data = Some(pb::image::Data::Raw(pb::RawImage {
        width: 28,
        height: 28,
        pixels: vec![0; 700].into(),
    }));
    let status = refused(&mut client, messages).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("AddImages message 37: images[3]"),
        "{status:?}"
    );
    assert!(
        status.message().contains("(0 added, 360 duplicates)"),
        "{status:?}"
    );
    assert_eq!(job_ids(&mut client, &job_id).await, ids_of_messages(36));

    // Sending the whole stream again completes the job, each image once, labelled on arrival.
    let added = within(
        LIMIT,
        client.add_images(tokio_stream::iter(all_messages(&job_id, &pixels))),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!((added.added, added.duplicates), (640, 360));
    assert_eq!(
        job_ids(&mut client, &job_id).await,
        ids_of_messages(MESSAGES)
    );
    let c = counts(&mut client, &job_id).await;
    assert_eq!((c.total, c.pending), (1000, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_mid_stream_leaves_whole_messages_and_a_resend_completes_the_job() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let mut client = LabelJobsClient::new(server.channel().await);
    let job_id = new_job(&mut client).await;
    let (pixels, _) = test_images(MESSAGES * PER_MESSAGE);

    // A stream fed by hand: 40 messages, then the client goes away without ending it.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut streaming = client.clone();
    let call = tokio::spawn(async move {
        streaming
            .add_images(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for m in 0..40 {
        tx.send(message(&job_id, &pixels, m)).await.unwrap();
    }
    eventually(LIMIT, "the 40 messages sent to be stored", || {
        let (mut client, job_id) = (client.clone(), job_id.clone());
        async move { (counts(&mut client, &job_id).await.total == 400).then_some(()) }
    })
    .await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    drop(tx);
    assert_eq!(job_ids(&mut client, &job_id).await, ids_of_messages(40));

    let added = within(
        LIMIT,
        client.add_images(tokio_stream::iter(all_messages(&job_id, &pixels))),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!((added.added, added.duplicates), (600, 400));
    assert_eq!(
        job_ids(&mut client, &job_id).await,
        ids_of_messages(MESSAGES)
    );
    let c = counts(&mut client, &job_id).await;
    assert_eq!((c.total, c.pending), (1000, 0));
    server.shutdown().await;
}
