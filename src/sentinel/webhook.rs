//! Delivering breach alerts: a POST of the breach as JSON to
//! `sentinel.webhook`, retried with exponential backoff (250 ms, doubling,
//! at most 30 s apart) up to `sentinel.webhook_attempts` times. Alerts wait
//! in a bounded queue served by one task, so a slow or failing receiver
//! never holds up a query; a full queue drops the alert (counted and
//! logged; the breach stays in the list and the audit).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use super::breach::Breach;

const QUEUE: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Delivery {
    delivered,
    /// Given up after every attempt failed.
    failed,
    /// The queue was full.
    dropped,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub result: Delivery,
}

/// The sending side; cloned into whoever raises breaches.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Breach>,
    outcomes: Family<DeliveryLabels, Counter>,
}

pub struct WebhookSettings {
    pub url: String,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Webhook {
    /// Starts the delivery task in the current runtime.
    pub fn start(
        settings: WebhookSettings,
        outcomes: Family<DeliveryLabels, Counter>,
    ) -> Result<Webhook, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("esq/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (queue, alerts) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(client, settings, alerts, outcomes.clone()));
        Ok(Webhook { queue, outcomes })
    }

    /// Queues an alert; never waits.
    pub fn send(&self, breach: Breach) {
        if let Err(err) = self.queue.try_send(breach) {
            self.count(Delivery::dropped);
            tracing::error!(error = %err, "breach alert dropped: the webhook queue is full");
        }
    }

    fn count(&self, result: Delivery) {
        self.outcomes
            .get_or_create(&DeliveryLabels { result })
            .inc();
    }
}

async fn deliver_all(
    client: reqwest::Client,
    settings: WebhookSettings,
    mut alerts: mpsc::Receiver<Breach>,
    outcomes: Family<DeliveryLabels, Counter>,
) {
    while let Some(breach) = alerts.recv().await {
        let result = deliver(&client, &settings, &breach).await;
        outcomes.get_or_create(&DeliveryLabels { result }).inc();
    }
}

async fn deliver(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    breach: &Breach,
) -> Delivery {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=settings.attempts {
        let outcome = client.post(&settings.url).json(breach).send().await;
        let problem = match outcome {
            Ok(response) if response.status().is_success() => {
                tracing::info!(breach = %breach.id, attempt, "breach alert delivered");
                return Delivery::delivered;
            }
            Ok(response) => format!("answered {}", response.status()),
            Err(err) => err.to_string(),
        };
        tracing::warn!(breach = %breach.id, attempt, problem, "breach alert not delivered");
        if attempt < settings.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::error!(breach = %breach.id, attempts = settings.attempts, "breach alert given up");
    Delivery::failed
}
