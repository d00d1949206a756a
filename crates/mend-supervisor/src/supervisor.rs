//! All services: start in dependency order, route operator commands, shut down in reverse order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mend_config::{Config, Service};
use mend_types::ServiceName;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runner::{Control, ReplicaHandle, ReplicaStatus, RunnerContext, TrafficControl};

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
    /// A rolling restart stopped because a restarted replica did not come back ready in time; the
    /// replicas after it were left alone.
    #[error("replica {index} of {service:?} was not ready again within {}s: rolling restart stopped", waited.as_secs())]
    NotReadyAgain {
        /// The service.
        service: String,
        /// The replica that did not come back.
        index: u32,
        /// How long mend waited.
        waited: Duration,
    },
}

/// The supervisor of every configured service.
pub struct Supervisor {
    services: Vec<ServiceHandle>,
    boot: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts a task per replica and starts each service once its dependencies are ready. Services with
    /// an entry in `traffic` drain their replicas before planned stops.
    pub fn start(config: &Config, ctx: RunnerContext, traffic: &HashMap<ServiceName, Arc<dyn TrafficControl>>) -> Self {
        let services: Vec<ServiceHandle> = config
            .services
            .iter()
            .map(|service| {
                let service = Arc::new(service.clone());
                let replicas = (0..service.total_replicas())
                    .map(|index| {
                        ReplicaHandle::start(service.clone(), index, ctx.clone(), traffic.get(&service.name).cloned())
                    })
                    .collect();
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
                        tracing::info!(service = %name, "waiting for a dependency to be ready");
                        // The dependency is ready as soon as any one of its replicas has been (latched: a
                        // brief moment of readiness is not missed), or has run to completion.
                        let mut waiting = tokio::task::JoinSet::new();
                        for mut replica in replicas {
                            waiting.spawn(async move {
                                replica.wait_for(|status| status.ever_ready || status.completed).await.is_ok()
                            });
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

    /// Sends `control` to every replica of `name` (or to one, with `replica`) and waits, up to `wait` (per
    /// replica for a restart), until they have acted on it. A restart of several replicas rolls: one at a
    /// time. Returns the statuses afterwards.
    pub async fn control(
        &self,
        name: &str,
        replica: Option<u32>,
        control: Control,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let targets: Vec<&ReplicaHandle> = match replica {
            Some(index) => vec![
                service
                    .replicas
                    .get(index as usize)
                    .ok_or(ControlError::UnknownReplica { service: name.to_owned(), index })?,
            ],
            None => service.replicas.iter().collect(),
        };
        // Whether a replica has acted on the command: stopped; started and ready (or down for good); or
        // replaced by a new process that is ready (or down for good).
        // A new process is a new generation: a replica that was down and went down again after the command
        // has acted on it, whereas a status from before the command says nothing.
        let settled = |before: &ReplicaStatus, now: &ReplicaStatus| match control {
            Control::Stop => now.down,
            Control::Start => now.ready || (now.down && now.generation != before.generation),
            Control::Restart => (now.ready || now.down) && now.generation != before.generation,
        };
        if control == Control::Restart {
            // A rolling restart: one replica at a time, each back in the ready set before the next goes,
            // so that the service keeps serving.
            for replica in &targets {
                let before = replica.status();
                if !replica.send(control).await {
                    return Err(ControlError::ShuttingDown);
                }
                let mut status = replica.watch();
                let _ = tokio::time::timeout(wait, status.wait_for(|now| settled(&before, now))).await;
                // Going on while a replica is not back would take the service down one replica at a time
                // (a bad release, say): stop the roll instead.
                if !replica.status().ready && targets.len() > 1 {
                    return Err(ControlError::NotReadyAgain {
                        service: name.to_owned(),
                        index: replica.id.index,
                        waited: wait,
                    });
                }
            }
        } else {
            let before: Vec<ReplicaStatus> = targets.iter().map(|r| r.status()).collect();
            for replica in &targets {
                if !replica.send(control).await {
                    return Err(ControlError::ShuttingDown);
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            for (replica, before) in targets.iter().zip(&before) {
                let mut status = replica.watch();
                let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| settled(before, now))).await;
            }
        }
        Ok(targets.iter().map(|r| r.status()).collect())
    }

    /// Stops every service, dependents before their dependencies. The replica tasks end when the
    /// supervisor is dropped.
    pub async fn shutdown(&self, per_service_wait: Duration) {
        for task in &self.boot {
            task.abort();
        }
        // Stop in reverse start order: a service's dependents come after it in start order, so they stop
        // before it does.
        for service in self.services.iter().rev() {
            for replica in &service.replicas {
                let _ = replica.send(Control::Stop).await;
            }
            let deadline = tokio::time::Instant::now() + service.config.stop_timeout + per_service_wait;
            for replica in &service.replicas {
                let mut status = replica.watch();
                let _ = tokio::time::timeout_at(deadline, status.wait_for(|status| status.down)).await;
            }
        }
    }
}
