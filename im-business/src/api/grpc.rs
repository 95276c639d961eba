//! The gRPC API (the services of `business.proto`).
