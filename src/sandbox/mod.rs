//! Sandboxes for what enrichd talks to, served over real HTTP on loopback: used by tests,
//! benchmarks and `enrichd sandbox ...`. Platform sandboxes live in their connector crates; the
//! model provider sandbox lives here.

pub mod provider;
