// Package envelope encrypts and decrypts bulk data offline with a data key
// that only travels to Coffer in wrapped form.
//
// An envelope file is a header followed by the data sealed in segments. The
// header names one or more wrapped copies of a 256-bit data key (each made
// by a Wrapper: the Coffer KMS, a local key, ...), the encryption context,
// the segment size and a per-file salt and nonce prefix. The data key never
// encrypts data directly: a per-file key is derived from it with
// HKDF-SHA256, and each segment of the data is sealed with AES-256-GCM under
// the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015), whose
// nonce carries the segment counter and a last-segment flag, so truncation,
// reordering and appending are detected. The layout is tink's
// AES-GCM-HKDF streaming AEAD layout; docs/formats.md documents every byte.
//
// For most uses:
//
//   - Encrypt returns an io.WriteCloser: write the plaintext, then Close.
//   - Decrypt returns an io.Reader of the plaintext. It releases a segment
//     only after its tag verifies, and reports a truncated or altered file
//     as an error, never as short or wrong data.
//   - NewReaderAt decrypts a byte range of a file without reading the rest.
//   - ReadHeader describes a file (wrapped keys, context, sizes) without any
//     key.
//
// Keys plug in through two small interfaces: a Wrapper wraps a new data key
// (NewCoffer wraps it with the Coffer KMS, NewLocalKey with a key held by
// the process), and an Unwrapper recovers it from the header. Give Encrypt a
// Multi wrapper to add a second wrapped copy for disaster recovery (another
// key, or another Coffer server). CachingWrapper reuses a data key for many
// small files within strict limits, so that encrypting them does not call
// Coffer each time. A key served from its cache bypasses the server: no
// policy check, no revocation check and no audit record for that file,
// until the entry expires (see CachingWrapper).
//
// The Wrapper and Unwrapper interfaces know nothing of the file format: any
// other format that protects a data key bound to an encryption context (a
// sealed configuration file, say) can reuse them, the Coffer wrapper and
// the cache.
//
// Segments are sealed and opened in parallel on all cores, a window of
// segments (at least 2 per core, and 4 MiB) at a time, so memory stays
// bounded (two windows, about 8 MiB) whatever the file size.
package envelope
