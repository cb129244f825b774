import Foundation

/// The pids of running dnsmasq processes whose command line mentions `text`: how tests check that
/// a network's DHCP server runs exactly once, or not at all.
public func dnsmasqProcesses(mentioning text: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry in
        guard let pid = Int32(entry), let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else {
            return nil
        }
        let command = String(decoding: raw, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
        return command.contains("dnsmasq") && command.contains(text) ? pid : nil
    }
}
