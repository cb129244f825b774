import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The standard `process_*` series (the names Prometheus' own clients export, so that existing
/// dashboards and alerts work), read from `/proc/self` at each scrape: swift-system-metrics, which
/// would do this, is not on the package mirror.
public struct ProcessMetrics: MetricsCollector {
    /// Where the process' files are: `/proc/self`, or another process' for tests.
    let procDirectory: String
    let procRoot: String

    /// The collector of this process.
    public init() {
        self.init(procDirectory: "/proc/self", procRoot: "/proc")
    }

    init(procDirectory: String, procRoot: String) {
        self.procDirectory = procDirectory
        self.procRoot = procRoot
    }

    /// One reading of the process.
    struct Reading: Equatable {
        var cpuSeconds: Double
        var residentBytes: Double
        var virtualBytes: Double
        var startTimeSeconds: Double
        var openDescriptors: Int
        var maxDescriptors: Double
        var maxVirtualBytes: Double
    }

    public func collect(into text: inout MetricsText) async {
        guard let reading = read() else { return }
        text.family("process_cpu_seconds_total", .counter, help: "Total user and system CPU time spent in seconds.")
        text.sample("process_cpu_seconds_total", reading.cpuSeconds)
        text.family("process_resident_memory_bytes", .gauge, help: "Resident memory size in bytes.")
        text.sample("process_resident_memory_bytes", reading.residentBytes)
        text.family("process_virtual_memory_bytes", .gauge, help: "Virtual memory size in bytes.")
        text.sample("process_virtual_memory_bytes", reading.virtualBytes)
        text.family("process_virtual_memory_max_bytes", .gauge, help: "Maximum amount of virtual memory available in bytes.")
        text.sample("process_virtual_memory_max_bytes", reading.maxVirtualBytes)
        text.family("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.")
        text.sample("process_start_time_seconds", reading.startTimeSeconds)
        text.family("process_open_fds", .gauge, help: "Number of open file descriptors.")
        text.sample("process_open_fds", Double(reading.openDescriptors))
        text.family("process_max_fds", .gauge, help: "Maximum number of open file descriptors.")
        text.sample("process_max_fds", reading.maxDescriptors)
    }

    /// Reads the process, or nil when `/proc` cannot be read (then the series are left out, which
    /// Prometheus shows as absent rather than as a wrong zero).
    func read() -> Reading? {
        guard let stat = try? String(contentsOfFile: procDirectory + "/stat", encoding: .utf8),
            let fields = Self.statFields(stat), fields.count > 21,
            let userTicks = Double(fields[11]), let systemTicks = Double(fields[12]), let startTicks = Double(fields[19]),
            let virtualBytes = Double(fields[20]), let residentPages = Double(fields[21]),
            let systemStat = try? String(contentsOfFile: procRoot + "/stat", encoding: .utf8),
            let bootTime = Self.bootTime(systemStat)
        else { return nil }
        let ticks = Double(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        let pageSize = Double(max(sysconf(Int32(_SC_PAGESIZE)), 1))
        return Reading(
            cpuSeconds: (userTicks + systemTicks) / ticks, residentBytes: residentPages * pageSize, virtualBytes: virtualBytes,
            startTimeSeconds: bootTime + startTicks / ticks, openDescriptors: openDescriptors(),
            maxDescriptors: Self.limit(Int32(RLIMIT_NOFILE.rawValue)), maxVirtualBytes: Self.limit(Int32(RLIMIT_AS.rawValue)))
    }

    /// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and may
    /// itself hold spaces and parentheses: the fields start after the last `)`.
    static func statFields(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
    }

    /// `btime` of `/proc/stat`: when the host booted, in seconds since the epoch.
    static func bootTime(_ stat: String) -> Double? {
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    private func openDescriptors() -> Int {
        guard let directory = opendir(procDirectory + "/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            // Every entry but `.` and `..`, and the descriptor opendir itself holds.
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { $0.first == UInt8(ascii: ".") }
            if !isDot { count += 1 }
        }
        return max(count - 1, 0)
    }

    private static func limit(_ resource: Int32) -> Double {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 0 }
        return Double(limit.rlim_cur)
    }
}
