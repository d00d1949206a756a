//! All services: start in dependency order, route operator commands, shut down in reverse order.

use std::sync::Arc;
use std::time::Duration;

use mend_config::{Config, Service};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runner::{Control, ReplicaHandle, ReplicaStatus, RunnerContext};

/// One supervised service and its replicas.
pub struct ServiceHandle {
    /// The service's config.
    pub config: Arc<Service>,
    /// Its replicas, by index.
    pub replicas: Vec<ReplicaHandle>,
}

impl ServiceHandle {
    /// Statuses of all replicas.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas.iter().map(ReplicaHandle::status).collect()
    }

}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No such service.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The replica index does not exist.
    #[error("service {service:?} has no replica {index}")]
    UnknownReplica {
        /// The service.
        service: String,
        /// The index asked for.
        index: u32,
    },
    /// The replica tasks are gone (mend is shutting down).
    #[error("mend is shutting down")]
    ShuttingDown,
}

/// The supervisor of every configured service.
pub struct Supervisor {
    services: Vec<ServiceHandle>,
    boot: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts a task per replica and starts each service once its dependencies are ready.
    pub fn start(config: &Config, ctx: RunnerContext) -> Self {
        let services: Vec<ServiceHandle> = config
            .services
            .iter()
            .map(|service| {
                let service = Arc::new(service.clone());
                let replicas = (0..service.replicas).map(|index| ReplicaHandle::start(service.clone(), index, ctx.clone())).collect();
                ServiceHandle { config: service, replicas }
            })
            .collect();
        let boot = services
            .iter()
            .map(|service| {
                let dependencies: Vec<Vec<watch::Receiver<ReplicaStatus>>> = service
                    .config
                    .depends_on
                    .iter()
                    .filter_map(|dependency| services.iter().find(|s| s.config.name == *dependency))
                    .map(|dependency| dependency.replicas.iter().map(ReplicaHandle::watch).collect())
                    .collect();
                let targets: Vec<_> = service.replicas.iter().map(ReplicaHandle::watch).collect();
                let controls: Vec<_> = service.replicas.iter().map(|r| r.control_sender()).collect();
                let name = service.config.name.clone();
                tokio::spawn(async move {
                    for replicas in dependencies {
                        if replicas.is_empty() {
                            continue;
                        }
                        tracing::debug!(service = %name, "waiting for dependencies to be ready");
                        // The dependency is ready as soon as any one of its replicas is.
                        let mut waiting = tokio::task::JoinSet::new();
                        for mut replica in replicas {
                            waiting.spawn(async move { replica.wait_for(|status| status.ready).await.is_ok() });
                        }
                        loop {
                            match waiting.join_next().await {
                                Some(Ok(true)) => break,
                                Some(_) => continue,
                                // Every replica task of the dependency ended: mend is shutting down.
                                None => return,
                            }
                        }
                    }
                    for (status, control) in targets.iter().zip(controls) {
                        // Start only replicas nobody has touched yet (an operator may have stopped one).
                        if status.borrow().state == "waiting" {
                            let _ = control.send(Control::Start).await;
                        }
                    }
                })
            })
            .collect();
        Self { services, boot }
    }

    /// All services, in start order.
    pub fn services(&self) -> &[ServiceHandle] {
        &self.services
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceHandle> {
        self.services.iter().find(|service| service.config.name.as_str() == name)
    }

    /// Sends `control` to every replica of `name` (or to one, with `replica`) and waits, up to `wait`, until
    /// they have acted on it. Returns the statuses afterwards.
    pub async fn control(
        &self,
        name: &str,
        replica: Option<u32>,
        control: Control,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let targets: Vec<&ReplicaHandle> = match replica {
            Some(index) => vec![service.replicas.get(index as usize).ok_or(ControlError::UnknownReplica {
                service: name.to_owned(),
                index,
            })?],
            None => service.replicas.iter().collect(),
        };
        let before: Vec<ReplicaStatus> = targets.iter().map(|r| r.status()).collect();
        for replica in &targets {
            if !replica.send(control).await {
                return Err(ControlError::ShuttingDown);
            }
        }
        let settled = |before: &ReplicaStatus, now: &ReplicaStatus| match control {
            Control::Stop => now.down,
            Control::Start => !now.down && now.state != "backoff",
            Control::Restart => now.pid.is_some() && now.pid != before.pid && now.state != "stopping",
        };
        let waits = targets.iter().zip(&before).map(|(replica, before)| {
            let mut status = replica.watch();
            async move {
                let _ = status.wait_for(|now| settled(before, now)).await;
            }
        });
        let _ = tokio::time::timeout(wait, join_all(waits)).await;
        Ok(targets.iter().map(|r| r.status()).collect())
    }

    /// Stops every service, dependents before their dependencies, and ends the replica tasks.
    pub async fn shutdown(self, per_service_wait: Duration) {
        for task in &self.boot {
            task.abort();
        }
        let mut remaining: Vec<ServiceHandle> = self.services;
        // Stop in reverse start order: every service's dependents come after it in start order.
        while let Some(service) = remaining.pop() {
            for replica in &service.replicas {
                let _ = replica.send(Control::Stop).await;
            }
            let wait = service.config.stop_timeout + per_service_wait;
            let waits = service.replicas.iter().map(|replica| {
                let mut status = replica.watch();
                async move {
                    let _ = status.wait_for(|status| status.down).await;
                }
            });
            let _ = tokio::time::timeout(wait, join_all(waits)).await;
            for replica in service.replicas {
                replica.join().await;
            }
        }
    }
}

/// Waits for every future. Each one only checks a condition on a watch channel, so awaiting them in turn
/// takes as long as the slowest.
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    for future in futures {
        future.await;
    }
}
