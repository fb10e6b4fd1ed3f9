//! Agent feedback as training data (issue 17, step 1): each message's label by the agents'
//! votes (→ [`labels`]); personal data is masked in customer text (→ [`mask`]) before anything
//! is written.

pub mod labels;
pub mod mask;
