//! A trait in a nested module, implemented, served and called from another module.

mod api {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Args {
        pub n: u32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Failure {
        TooBig,
    }

    #[grid::handler]
    pub trait Math {
        async fn double(&self, args: Args) -> Result<u32, Failure>;
        async fn sum(&self, input: grid::RequestReceiver<u32>) -> Result<u32, Failure>;
        async fn chat(
            &self,
            ctx: &grid::Context,
            input: grid::RequestReceiver<String>,
            out: grid::ResponseSender<String>,
        ) -> Result<(), Failure>;
    }
}

mod server {
    use crate::api::{Args, Failure, Math, MathServer};

    pub struct Impl;

    impl Math for Impl {
        async fn double(&self, args: Args) -> Result<u32, Failure> {
            args.n.checked_mul(2).ok_or(Failure::TooBig)
        }
        async fn sum(&self, _input: grid::RequestReceiver<u32>) -> Result<u32, Failure> {
            Ok(0)
        }
        async fn chat(
            &self,
            _ctx: &grid::Context,
            _input: grid::RequestReceiver<String>,
            _out: grid::ResponseSender<String>,
        ) -> Result<(), Failure> {
            Ok(())
        }
    }

    pub fn serve(m: &grid::Manager) -> Result<(), grid::Error> {
        MathServer::new(Impl).register_subroute(m, "disk1")
    }
}

mod client {
    use crate::api::{Args, Failure, MathClient};

    pub async fn double(conn: grid::Connection) -> Result<u32, grid::CallError<Failure>> {
        MathClient::new(conn).double(Args { n: 2 }).await
    }
}

fn main() {
    let _ = server::serve;
    let _ = client::double;
}
