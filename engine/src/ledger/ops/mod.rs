//! One module per operation: its checks in precedence order, then its postings.

pub mod account;
pub mod adjust;
pub mod freeze;
pub mod guarantee;
pub mod payment;
pub mod recharge;
pub mod refund;
pub mod settle;
pub mod transfer;
pub mod withdrawal;
