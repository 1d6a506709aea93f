//! What consensus asks of the application: the [`Mailbox`] it holds ([`Automaton`],
//! [`Relay`], [`Reporter`]) turns each call into a [`Message`] for the actor.

use super::*;

/// Requests from consensus to the application.
pub enum Message {
    /// Build a block.
    Propose {
        /// Round and parent.
        context: Ctx,
        /// Where the digest goes.
        response: oneshot::Sender<Digest>,
    },
    /// Check a block.
    Verify {
        /// Round and parent.
        context: Ctx,
        /// The block's digest.
        payload: Digest,
        /// The verdict.
        response: oneshot::Sender<bool>,
    },
    /// Send a block to peers.
    Broadcast {
        /// The block's digest.
        payload: Digest,
        /// To whom.
        recipients: Recipients<PublicKey>,
    },
    /// A block was finalized (its ancestors with it).
    Finalized {
        /// Its view.
        view: u64,
        /// Its digest.
        payload: Digest,
    },
    /// Some view made progress.
    View(u64),
}

/// The handle consensus holds: [`Automaton`], [`Relay`] and [`Reporter`] in one.
#[derive(Clone)]
pub struct Mailbox {
    pub(super) tx: mpsc::UnboundedSender<Message>,
}

impl Mailbox {
    fn send(&self, m: Message) -> Feedback {
        if self.tx.send(m).is_ok() {
            Feedback::Ok
        } else {
            Feedback::Closed
        }
    }
}

impl Automaton for Mailbox {
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, context: Ctx) -> oneshot::Receiver<Digest> {
        let (response, rx) = oneshot::channel();
        self.send(Message::Propose { context, response });
        rx
    }

    async fn verify(&mut self, context: Ctx, payload: Digest) -> oneshot::Receiver<bool> {
        let (response, rx) = oneshot::channel();
        self.send(Message::Verify {
            context,
            payload,
            response,
        });
        rx
    }
}

impl CertifiableAutomaton for Mailbox {}

impl Relay for Mailbox {
    type Digest = Digest;
    type PublicKey = PublicKey;
    type Plan = Plan<PublicKey>;

    fn broadcast(&mut self, payload: Digest, plan: Plan<PublicKey>) -> Feedback {
        let recipients = match plan {
            Plan::Forward { recipients, .. } => recipients,
            _ => Recipients::All,
        };
        self.send(Message::Broadcast {
            payload,
            recipients,
        })
    }
}

impl Reporter for Mailbox {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Activity::Finalization(f) => self.send(Message::Finalized {
                view: f.view().get(),
                payload: f.proposal.payload,
            }),
            Activity::Notarization(n) => self.send(Message::View(n.view().get())),
            Activity::Nullification(n) => self.send(Message::View(n.view().get())),
            _ => Feedback::Ok,
        }
    }
}
