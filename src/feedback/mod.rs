//! Agent feedback as training data (issue 17, step 1): personal data is masked in customer
//! text (→ [`mask`]) before anything is written.

pub mod mask;
