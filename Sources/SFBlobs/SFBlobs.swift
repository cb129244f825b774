/// SFBlobs: blob data on this node's disk, image downloads, image inspection and the image cache.
///
/// Blob and artifact records live in the store (SFStore); this module owns the bytes.
public enum SFBlobs {}
