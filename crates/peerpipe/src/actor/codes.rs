//! What arrives for the nameplates this node allocated or claimed.

use super::*;

impl Actor {
    /// Hands `signal` to the owner of `nameplate`; a gone owner releases it.
    pub(super) async fn code_signal(&mut self, nameplate: u32, signal: CodeSignal) {
        let Some(route) = self.codes.get(&nameplate) else {
            return;
        };
        match route.tx.try_send(signal) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(nameplate, "code signals not read: dropping one");
            }
            Err(TrySendError::Closed(_)) => self.release_code(nameplate).await,
        }
    }

    /// Forgets `nameplate` and gives it up at the server.
    pub(super) async fn release_code(&mut self, nameplate: u32) {
        if self.codes.remove(&nameplate).is_some() {
            self.send_signal(ClientMessage::CodeRelease { nameplate })
                .await;
        }
    }
}
