import Logging
import SFAgent

extension HostLayout {
    /// A layout whose namespaces, devices and taps all begin with a test's `id` (from
    /// ``TestNames/unique(_:)``), so that a killed run's leftovers are cleanable by prefix; the host
    /// side lives in `hostNamespace` (nil: the process's own namespace).
    public init(testID id: String, hostNamespace: String?) {
        self.init(hostNamespace: hostNamespace, namespacePrefix: id + "-", tapPrefix: id)
    }
}

extension Logger {
    /// A test's logger that prints warnings and worse: a passing test stays quiet, a failing one
    /// still shows why.
    public static func testWarnings(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = .warning
        return logger
    }
}
