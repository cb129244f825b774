import Foundation

/// One finding about the host, as virt-host-validate reports them: what was checked, whether it
/// passed, what was found, and what to do about it.
public struct HostCheck: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Comparable, Sendable {
        case pass = "PASS"
        case warn = "WARN"
        case fail = "FAIL"

        private var rank: Int {
            switch self {
            case .pass: 0
            case .warn: 1
            case .fail: 2
            }
        }

        public static func < (lhs: Status, rhs: Status) -> Bool { lhs.rank < rhs.rank }
    }

    /// A short, stable name (`kvm`, `storage-access`), for scripts and log fields.
    public var name: String
    public var status: Status
    /// What was found, naming the thing (a path, a module, a version).
    public var message: String
    /// What to do, when the status is not PASS.
    public var hint: String?

    public init(_ name: String, _ status: Status, _ message: String, hint: String? = nil) {
        self.name = name
        self.status = status
        self.message = message
        self.hint = status == .pass ? nil : hint
    }
}

/// Every finding of one run of the checks.
public struct HostReport: Codable, Equatable, Sendable {
    public var checks: [HostCheck]

    public init(checks: [HostCheck]) {
        self.checks = checks
    }

    /// The worst status found (PASS when there were no checks).
    public var worst: HostCheck.Status { checks.map(\.status).max() ?? .pass }

    /// `sfnode doctor`'s exit status: 0 all passed, 1 warnings, 2 failures.
    public var exitCode: Int32 {
        switch worst {
        case .pass: 0
        case .warn: 1
        case .fail: 2
        }
    }

    /// One line per check (`PASS  kvm: …`), its hint indented below it, then a summary line.
    public var text: String {
        var lines: [String] = []
        for check in checks {
            lines.append("\(check.status.rawValue)  \(check.name): \(check.message)")
            if let hint = check.hint { lines.append("      hint: \(hint)") }
        }
        let counts = [HostCheck.Status.pass, .warn, .fail].map { status in "\(checks.filter { $0.status == status }.count) \(status.rawValue)" }
        lines.append(counts.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }
}
