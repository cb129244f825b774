/// sfnode's version: what `sfnode --version` prints, what the Debian package is numbered by
/// (`scripts/build-deb`), and what the daemons log as they start.
public enum SFNodeVersion {
    public static let current = "0.22.0"
}
