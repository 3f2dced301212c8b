//! Integration tests of the agent, its buddies and the CLI: real processes, real signals,
//! real SQLite files. One test binary; each module covers one behaviour.

mod helper;

mod agent_lifecycle;
mod api_schema;
mod chaos;
mod config_errors;
mod dashboard;
mod dev;
mod events_cli;
mod fleet;
mod hub_backup;
mod hub_cert;
mod join_mitm;
mod key_rotation;
mod lanes;
mod metrics;
mod module_tools;
mod modules_e2e;
mod ordering;
mod output_stream;
mod process_setup;
mod self_update;
mod supervision;
