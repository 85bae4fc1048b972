//! The application: use cases over the ports, the HTTP layer, settings
//! and wiring.
