//! Configuration (being written: see the config brief).
