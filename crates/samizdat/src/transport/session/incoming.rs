//! The accepting side: streams the peer opens, waiting for an answer
//! (accept with a stream, or refuse with a status).

use super::*;

impl Incoming {
    /// The next stream the client opened; `None` once the session ended.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        let offer = self.rx.recv().await?;
        Some(IncomingStream {
            stream: offer.stream,
            dest: offer.dest,
            first: offer.first,
            life: Some(self.life.clone()),
        })
    }
}

impl IncomingStream {
    /// Where the client wants to go.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The data the client sent with its open (empty after the first call).
    pub fn take_first(&mut self) -> Vec<u8> {
        let first = std::mem::take(&mut self.first);
        if let Some(life) = &self.life {
            let shared = &life.0;
            if shared.lock().consumed(self.stream, first.len()) {
                shared.writer.notify_one();
            }
        }
        first
    }

    /// Connects the stream: REPLY ok. First data not taken is read first.
    pub fn accept(mut self) -> Stream {
        let life = self.life.take().expect("answered once");
        {
            let shared = &life.0;
            let mut st = shared.lock();
            if st.mux.reply(self.stream, Status::Ok) {
                st.push_control(Control::Reply {
                    stream: self.stream,
                    status: Status::Ok,
                });
            }
            let first = std::mem::take(&mut self.first);
            if let Some(slot) = st.slots.get_mut(&self.stream) {
                for b in first.into_iter().rev() {
                    slot.recv.push_front(b);
                }
            }
            drop(st);
            shared.writer.notify_one();
        }
        Stream::new(life, self.stream)
    }

    /// Refuses the stream with `status` (`Ok` counts as a general failure).
    pub fn refuse(mut self, status: Status) {
        let status = if status == Status::Ok {
            Status::GeneralFailure
        } else {
            status
        };
        self.answer(status);
    }

    fn answer(&mut self, status: Status) {
        let Some(life) = self.life.take() else {
            return;
        };
        let shared = &life.0;
        let mut st = shared.lock();
        if st.mux.reply(self.stream, status) {
            st.push_control(Control::Reply {
                stream: self.stream,
                status,
            });
        }
        st.slots.remove(&self.stream);
        drop(st);
        shared.writer.notify_one();
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        self.answer(Status::GeneralFailure);
    }
}
