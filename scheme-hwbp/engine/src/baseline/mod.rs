//! Reference reimplementations of Linux accounting (benchmark baselines).
