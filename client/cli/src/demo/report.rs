//! The demo's closing part: the table of what each node received (and the expectations
//! on it), the receipts for the consultation request, and the offline audit check.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ewx_proto::{Kind, MessageId};
use ewx_testkit::{AUDITOR, BROADER, CORE};

use super::{Demo, wanted};
use crate::error::Result;

impl Demo {
    /// Print the table and check each node got exactly what its grants allow.
    pub(super) fn table(&mut self) {
        let seen = self.board.with(|all| all.clone());
        let _ = writeln!(
            self.text,
            "\n  node  role     received  CORE  exercise  denied  FLASH latency"
        );
        for n in CORE.iter().chain(&BROADER) {
            let s = seen.get(*n).cloned().unwrap_or_default();
            let broader = BROADER.contains(n);
            let role = if broader { "partner" } else { "liaison" };
            let lat = s.flash_latency.map_or("-".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1000.0)
            });
            let denied = if s.denied.is_empty() {
                "-".to_string()
            } else {
                s.denied.join(",")
            };
            let _ = writeln!(
                self.text,
                "  {n:<5} {role:<8} {:>8}  {:>4}  {:>8}  {denied:<6}  {lat}",
                s.kinds.len(),
                s.core,
                s.exercise
            );
            let (got, want) = (s.kinds.len(), wanted(n));
            self.expect(
                got == want,
                format!("{n} received {got} messages, expected {want}"),
            );
            if broader {
                self.expect(
                    s.core == 0,
                    format!("{n} received {} CORE messages", s.core),
                );
                self.expect(
                    s.kinds.contains(&Kind::SanctionsTrigger),
                    format!("{n} got the sanctions snapback"),
                );
            } else {
                self.expect(
                    s.flash_latency.is_some(),
                    format!("{n} got the FLASH warning"),
                );
            }
        }
    }

    /// Every guarantor's receipt for the consultation request is in the log, and reached
    /// UA as a push — unless UA was reconnecting when it was logged (a cluster whose
    /// leader stopped): a push goes to a connected sender only, the log keeps them all.
    pub(super) fn receipts(&mut self, pushed: &BTreeSet<String>, logged: Result<BTreeSet<String>>) {
        let guarantors: BTreeSet<String> = CORE[1..].iter().map(|s| s.to_string()).collect();
        let logged = match logged {
            Ok(l) => l,
            Err(e) => {
                self.failures
                    .push(format!("the auditor could not read the receipts: {e}"));
                BTreeSet::new()
            }
        };
        self.expect(
            guarantors.is_subset(&logged),
            format!("receipts for the consultation request from every guarantor in the log (got {logged:?})"),
        );
        if self.killed.is_none() {
            self.expect(
                guarantors.is_subset(pushed),
                format!("receipts for the consultation request pushed to UA from every guarantor (got {pushed:?})"),
            );
        }
        let _ = writeln!(
            self.text,
            "\n  consultation request: receipts from {} of {} guarantors in the log, {} pushed to UA; deadlines 24 h / 72 h",
            guarantors.intersection(&logged).count(),
            guarantors.len(),
            guarantors.intersection(pushed).count(),
        );
    }

    /// Who has a receipt for message `id` in the log, as the auditor reads it from a
    /// running broker.
    pub(super) async fn logged_receipts(&self, id: Option<MessageId>) -> Result<BTreeSet<String>> {
        let Some(id) = id else {
            return Ok(BTreeSet::new());
        };
        let live = (0..self.addrs.len())
            .find(|i| self.killed != Some(*i))
            .unwrap_or(0);
        let auditor = super::connect(&self.addrs, live, AUDITOR, &self.roster, &self.clock).await?;
        let (_, receipts) = ewx_client::audit::receipts(&auditor, &id).await?;
        Ok(receipts.into_iter().map(|r| r.by.to_string()).collect())
    }

    /// Verify the stopped broker's store offline, as an auditor would (in a cluster,
    /// every replica's: the surviving two hold the whole log, the stopped leader what it
    /// had until it stopped).
    pub(super) async fn audit(&mut self) -> Result<()> {
        let replicas = self.brokers.len();
        // the entries of the replicas that ran to the end
        let mut lengths = Vec::new();
        for i in 0..replicas {
            let copy = crate::offline::StoreCopy::open(&self.dir.path().join(super::data_dir(i)))?;
            let who = if replicas > 1 {
                format!(" of replica {} ({})", i + 1, ewx_testkit::REPLICAS[i])
            } else {
                String::new()
            };
            match ewx_client::audit::verify(&copy, self.roster.clone(), 0, &mut |_, _| {}).await {
                Ok(s) => {
                    let _ = writeln!(
                        self.text,
                        "  audit log{who}: verified: {} entries, {} envelopes signed by their senders, {} receipts, {} signed checkpoints{}, {} cases whose {} deadline entries agree with the auditor's fold, root {}",
                        s.entries,
                        s.envelopes,
                        s.receipts,
                        s.checkpoints,
                        if replicas > 1 {
                            format!(" ({} signed by 2 replicas or more)", s.replica_signed)
                        } else {
                            String::new()
                        },
                        s.cases,
                        s.case_deadlines,
                        s.root.short()
                    );
                    if self.killed != Some(i) {
                        lengths.push(s.entries);
                        self.expect(
                            s.cases == 4 && s.case_deadlines >= 3,
                            format!(
                                "the audit{who} folds 4 cases with their deadlines (got {} cases, {} deadlines)",
                                s.cases, s.case_deadlines
                            ),
                        );
                    }
                }
                Err(ewx_client::Error::Unsound(f)) => {
                    let _ = writeln!(self.text, "  audit log{who}: FAILED: {f}");
                    self.failures.push(format!("audit verification{who}: {f}"));
                }
                Err(e) => self
                    .failures
                    .push(format!("audit verification{who} could not run: {e}")),
            }
        }
        self.expect(
            lengths.windows(2).all(|w| w[0] == w[1]),
            format!("the running replicas hold the same log (audit entries {lengths:?})"),
        );
        Ok(())
    }
}
