//! The smallest grid program: two nodes in one process, a typed service, one call each way.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum HelloError {
    NoName,
}

#[grid::handler]
trait Hello {
    /// Answers a greeting.
    async fn hello(&self, greeting: Greeting) -> Result<String, HelloError>;
}

struct Friendly;

impl Hello for Friendly {
    async fn hello(&self, greeting: Greeting) -> Result<String, HelloError> {
        if greeting.name.is_empty() {
            return Err(HelloError::NoName);
        }
        Ok(format!("hello, {}", greeting.name))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = ["http://127.0.0.1:7401", "http://127.0.0.1:7402"];
    let mut managers = Vec::new();
    for name in nodes {
        let manager = grid::Manager::builder(name)
            .peers(nodes)
            .secret("shared cluster secret")
            .start()
            .await?;
        HelloServer::new(Friendly).register(&manager)?;
        managers.push(manager);
    }
    let a_to_b = HelloClient::new(managers[0].connection(nodes[1])?);
    a_to_b
        .connection()
        .wait_for_connect(std::time::Duration::from_secs(5))
        .await?;
    let reply = a_to_b
        .hello(Greeting {
            name: "node a".into(),
        })
        .await?;
    println!("{reply}");
    let b_to_a = HelloClient::new(managers[1].connection(nodes[0])?);
    println!(
        "{}",
        b_to_a
            .hello(Greeting {
                name: "node b".into()
            })
            .await?
    );
    Ok(())
}
