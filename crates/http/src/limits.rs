//! Limits applied to every connection and request.

/// Upper bound for [`Limits::header_count_max`]: the decoder keeps its header slots on the stack.
pub const HEADER_COUNT_CAP: usize = 256;

/// Every bound the server enforces, with the status a client sees when it is crossed.
///
/// All sizes are in bytes and all durations in milliseconds, as the field names say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a request head (request line + headers + final empty line). Over: 431.
    /// Also bounds the trailer section of a chunked body (over: 431).
    pub header_bytes_max: usize,
    /// Number of header fields in a head (and of trailer fields). Over: 431.
    /// Values above [`HEADER_COUNT_CAP`] are treated as [`HEADER_COUNT_CAP`].
    pub header_count_max: usize,
    /// Bytes of the request target. Over: 414.
    pub uri_bytes_max: usize,
    /// Bytes of a decoded body. Over: 413, sent before reading the body when the length is
    /// declared, then the connection is closed.
    pub body_bytes_max: usize,
    /// Open connections per `serve` call (per shard). Over: 503 and close.
    pub connections_max: usize,
    /// Time for a whole request head to arrive, from its first byte (slowloris). Over: 408 and close.
    pub head_read_timeout_ms: u64,
    /// Time a keep-alive connection may sit without starting a new request. Over: close.
    pub idle_timeout_ms: u64,
    /// Time for a whole body to arrive once the head is complete. Over: 408 and close.
    pub body_read_timeout_ms: u64,
    /// Time a single write may make no progress (a client not reading). Over: close.
    pub write_stall_timeout_ms: u64,
    /// Requests answered from one read before the responses are flushed.
    pub pipeline_depth_max: usize,
    /// Bytes of encoded responses buffered before they are flushed; also bounds what a
    /// client that does not read can make the server hold (one flush plus one response).
    pub output_buffer_bytes_max: usize,
    /// Time in-flight requests get to finish after shutdown is triggered.
    pub shutdown_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: 16 * 1024,
            header_count_max: 100,
            uri_bytes_max: 8 * 1024,
            body_bytes_max: 4 * 1024 * 1024,
            connections_max: 10_000,
            head_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 30_000,
            write_stall_timeout_ms: 10_000,
            pipeline_depth_max: 64,
            output_buffer_bytes_max: 64 * 1024,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl Limits {
    /// Checks that every limit is usable (non-zero, header count within
    /// [`HEADER_COUNT_CAP`], URI limit within the head limit); for validating configuration.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("header_bytes_max", self.header_bytes_max as u64),
            ("header_count_max", self.header_count_max as u64),
            ("uri_bytes_max", self.uri_bytes_max as u64),
            ("connections_max", self.connections_max as u64),
            ("head_read_timeout_ms", self.head_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("write_stall_timeout_ms", self.write_stall_timeout_ms),
            ("pipeline_depth_max", self.pipeline_depth_max as u64),
            (
                "output_buffer_bytes_max",
                self.output_buffer_bytes_max as u64,
            ),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("http limit {name} must be greater than 0"));
        }
        if self.header_count_max > HEADER_COUNT_CAP {
            return Err(format!(
                "http limit header_count_max is {}, at most {HEADER_COUNT_CAP} is supported",
                self.header_count_max
            ));
        }
        if self.uri_bytes_max > self.header_bytes_max {
            return Err(format!(
                "http limit uri_bytes_max ({}) exceeds header_bytes_max ({})",
                self.uri_bytes_max, self.header_bytes_max
            ));
        }
        Ok(())
    }

    pub(crate) fn header_slots(&self) -> usize {
        self.header_count_max.clamp(1, HEADER_COUNT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let zero = Limits {
            idle_timeout_ms: 0,
            ..Limits::default()
        };
        assert!(zero.validate().unwrap_err().contains("idle_timeout_ms"));
        let many = Limits {
            header_count_max: HEADER_COUNT_CAP + 1,
            ..Limits::default()
        };
        assert!(many.validate().unwrap_err().contains("header_count_max"));
    }
}
