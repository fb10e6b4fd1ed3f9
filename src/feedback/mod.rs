//! Agent feedback as training data (issue 17, step 1): `moodstream feedback export` reads the
//! console's feedback events (→ [`export`]), decides each message's label by the agents'
//! votes (→ [`labels`]), joins the customer's text from the input topics and masks personal
//! data in it (→ [`mask`]) before anything is written.

pub mod export;
pub mod labels;
pub mod mask;

use clap::{Args, Subcommand};

/// `moodstream feedback ...`.
#[derive(Args, Debug)]
pub struct FeedbackArgs {
    #[command(subcommand)]
    pub command: FeedbackCommand,
}

#[derive(Subcommand, Debug)]
pub enum FeedbackCommand {
    /// Write agent feedback as masked JSONL training examples (label, text, provenance).
    Export(Box<export::ExportConfig>),
}
