import Foundation
import SFControl
import SFSystem

/// An ISO 9660 image with Joliet names, built in memory: the format of a config drive.
///
/// Two directory trees over the same file data: the primary one with ISO 9660 level 2 names
/// (upper case, for readers that know nothing else) and a Joliet one with the files' own names in
/// UCS-2, which Linux, the BSDs and Windows read in preference. The image holds the system area,
/// the primary and Joliet volume descriptors, a terminator, both trees' path tables and
/// directories, then the files, each at a sector of its own.
///
/// Built in-process because the drive is on the critical path of every instance start: xorriso
/// took 100 ms to write a drive of a few kilobytes (its start-up, not the writing), a fifth of
/// a whole create (BENCHMARKS.md (e3)).
struct ISO9660Image {
    static let sectorSize = 2048
    /// The longest Joliet name (in UTF-16 units) readers take without extensions.
    static let maximumJolietName = 64
    /// The deepest directory ISO 9660 allows (the root is level 1).
    static let maximumDepth = 8

    /// One directory of one tree: its name as written, its subdirectories and files.
    private final class Directory {
        /// The name given (empty for the root) and the identifier written for it.
        let name: String
        let identifier: [UInt8]
        var directories: [Directory] = []
        var files: [(identifier: [UInt8], file: Int)] = []
        /// The names given to its entries, and the identifiers written for them.
        var names: Set<String> = []
        var identifiers: Set<[UInt8]> = []
        weak var parent: Directory?
        var number = 0
        var sector = 0
        var size = 0

        init(name: String, identifier: [UInt8], parent: Directory?) {
            self.name = name
            self.identifier = identifier
            self.parent = parent
        }
    }

    /// The image of `files` (paths relative to its root, `/`-separated) labelled `volumeID`
    /// (at most 16 characters, as Joliet allows), dated `date`. A path that is empty, absolute,
    /// climbs (`..`), names a file and a directory at once, or is too long or deep is refused.
    static func build(volumeID: String, files: [(path: String, contents: Data)], date: Date = Date()) throws -> Data {
        guard !volumeID.isEmpty, volumeID.utf16.count <= 16, volumeID.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
            throw ControlError.invalid("ISO 9660 volume id '\(volumeID)' must be 1 to 16 ASCII characters")
        }
        let primary = Directory(name: "", identifier: [0], parent: nil)
        let joliet = Directory(name: "", identifier: [0], parent: nil)
        for (index, file) in files.enumerated() {
            let components = file.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard !file.path.isEmpty, !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                throw ControlError.invalid("config drive file '\(file.path)' is not a relative path inside the drive")
            }
            guard components.count <= maximumDepth else {
                throw ControlError.invalid("config drive file '\(file.path)' is deeper than ISO 9660's \(maximumDepth) levels")
            }
            for name in components where name.utf16.count > maximumJolietName {
                throw ControlError.invalid("config drive name '\(name)' is longer than Joliet's \(maximumJolietName) characters")
            }
            try add(components, file: index, path: file.path, to: joliet, joliet: true)
            try add(components, file: index, path: file.path, to: primary, joliet: false)
        }
        for root in [primary, joliet] { sort(root) }

        // Everything's place is known from the names alone: first the sizes, then the sectors.
        let primaryDirectories = numbered(primary)
        let jolietDirectories = numbered(joliet)
        // A path table names a directory's parent in 16 bits.
        guard primaryDirectories.count <= Int(UInt16.max) else {
            throw ControlError.invalid("config drive of \(primaryDirectories.count) directories; ISO 9660 numbers at most \(UInt16.max)")
        }
        let primaryTableSize = pathTableSize(primaryDirectories)
        let jolietTableSize = pathTableSize(jolietDirectories)
        var next = 19  // system area 0-15, primary 16, Joliet 17, terminator 18
        func allocate(_ bytes: Int) -> Int {
            defer { next += sectors(bytes) }
            return next
        }
        let tables = (
            primaryL: allocate(primaryTableSize), primaryM: allocate(primaryTableSize),
            jolietL: allocate(jolietTableSize), jolietM: allocate(jolietTableSize))
        for directory in primaryDirectories + jolietDirectories {
            directory.size = directorySize(directory)
            directory.sector = allocate(directory.size)
        }
        var fileSectors: [Int] = []
        for file in files {
            // An empty file has no data; it points where the next one starts, as mkisofs does.
            fileSectors.append(file.contents.isEmpty ? next : allocate(file.contents.count))
        }
        let totalSectors = next
        guard totalSectors <= Int(UInt32.max) / sectorSize else {
            throw ControlError.invalid("config drive files of \(totalSectors) sectors do not fit an ISO 9660 image")
        }

        var image = Data(count: totalSectors * sectorSize)
        let recorded = recordingDate(date)
        func put(_ bytes: [UInt8], at offset: Int) {
            image.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        }
        func record(_ identifier: [UInt8], sector: Int, size: Int, directory: Bool) -> [UInt8] {
            var bytes: [UInt8] = [0, 0]
            bytes += bothEndian32(sector) + bothEndian32(size) + recorded
            bytes += [directory ? 2 : 0, 0, 0] + bothEndian16(1) + [UInt8(identifier.count)] + identifier
            if identifier.count % 2 == 0 { bytes.append(0) }
            bytes[0] = UInt8(bytes.count)
            return bytes
        }
        for directory in primaryDirectories + jolietDirectories {
            var records = [
                record([0], sector: directory.sector, size: directory.size, directory: true),
                record([1], sector: (directory.parent ?? directory).sector, size: (directory.parent ?? directory).size, directory: true),
            ]
            for child in children(of: directory) {
                switch child {
                case .directory(let made):
                    records.append(record(made.identifier, sector: made.sector, size: made.size, directory: true))
                case .file(let identifier, let file):
                    records.append(record(identifier, sector: fileSectors[file], size: files[file].contents.count, directory: false))
                }
            }
            var offset = directory.sector * sectorSize
            for bytes in records {
                // A record never crosses a sector: the rest of the sector stays zero.
                if (offset % sectorSize) + bytes.count > sectorSize { offset += sectorSize - offset % sectorSize }
                put(bytes, at: offset)
                offset += bytes.count
            }
        }
        for (index, file) in files.enumerated() where !file.contents.isEmpty {
            image.replaceSubrange(fileSectors[index] * sectorSize..<fileSectors[index] * sectorSize + file.contents.count, with: file.contents)
        }
        put(pathTable(primaryDirectories, bigEndian: false), at: tables.primaryL * sectorSize)
        put(pathTable(primaryDirectories, bigEndian: true), at: tables.primaryM * sectorSize)
        put(pathTable(jolietDirectories, bigEndian: false), at: tables.jolietL * sectorSize)
        put(pathTable(jolietDirectories, bigEndian: true), at: tables.jolietM * sectorSize)

        for joliet in [false, true] {
            let root = joliet ? jolietDirectories[0] : primaryDirectories[0]
            var descriptor = [UInt8](repeating: 0, count: sectorSize)
            func set(_ bytes: [UInt8], _ offset: Int) { descriptor.replaceSubrange(offset..<offset + bytes.count, with: bytes) }
            set([joliet ? 2 : 1] + Array("CD001".utf8) + [1], 0)
            let text: (String, Int) -> [UInt8] = joliet ? { jolietText($0, bytes: $1) } : { asciiText($0, bytes: $1) }
            set(text("LINUX", 32), 8)
            set(text(volumeID, 32), 40)
            set(bothEndian32(totalSectors), 80)
            if joliet { set(Array("%/E".utf8), 88) }  // UCS-2 level 3
            set(bothEndian16(1), 120)
            set(bothEndian16(1), 124)
            set(bothEndian16(sectorSize), 128)
            let tableSize = joliet ? jolietTableSize : primaryTableSize
            set(bothEndian32(tableSize), 132)
            set(littleEndian32(joliet ? tables.jolietL : tables.primaryL), 140)
            set(bigEndian32(joliet ? tables.jolietM : tables.primaryM), 148)
            set(record([0], sector: root.sector, size: root.size, directory: true), 156)
            for (offset, length) in [(190, 128), (318, 128), (446, 128), (574, 128), (702, 37), (739, 37), (776, 37)] {
                set(text("", length), offset)
            }
            set(text("SFNODE", 128), 574)
            let dated = volumeDate(date)
            set(dated, 813)
            set(dated, 830)
            set(Array(repeating: UInt8(ascii: "0"), count: 16) + [0], 847)
            set(dated, 864)
            set([1], 881)
            put(descriptor, at: (joliet ? 17 : 16) * sectorSize)
        }
        put([255] + Array("CD001".utf8) + [1], at: 18 * sectorSize)
        return image
    }

    private static func add(_ components: [String], file: Int, path: String, to root: Directory, joliet: Bool) throws {
        var directory = root
        for (depth, component) in components.enumerated() {
            let isFile = depth == components.count - 1
            if !isFile, let existing = directory.directories.first(where: { $0.name == component }) {
                directory = existing
                continue
            }
            guard directory.names.insert(component).inserted else {
                throw ControlError.invalid("config drive path '\(path)' names '\(component)' twice, or as a file and a directory")
            }
            let identifier = joliet ? ucs2(isFile ? component + ";1" : component) : primaryIdentifier(component, isFile: isFile, in: directory)
            directory.identifiers.insert(identifier)
            if isFile {
                directory.files.append((identifier, file))
            } else {
                let made = Directory(name: component, identifier: identifier, parent: directory)
                directory.directories.append(made)
                directory = made
            }
        }
    }

    /// ISO 9660 level 2: d-characters (A-Z, 0-9, _), at most 30 with a file's `;1`; a name that
    /// maps onto one its directory has already gets a number (`NAME_2.JSON;1`), as mkisofs does.
    private static func primaryIdentifier(_ name: String, isFile: Bool, in directory: Directory) -> [UInt8] {
        let mapped = name.uppercased().unicodeScalars.map { scalar -> UInt8 in
            switch scalar {
            case "A"..."Z", "0"..."9": UInt8(scalar.value)
            default: UInt8(ascii: "_")
            }
        }
        // A file's last dot separates its extension (at most 3 characters kept).
        var stem = mapped
        var suffix: [UInt8] = []
        if isFile {
            if let dot = name.utf8.lastIndex(of: UInt8(ascii: ".")).map({ name.utf8.distance(from: name.utf8.startIndex, to: $0) }),
                dot < mapped.count
            {
                stem = Array(mapped[..<dot])
                suffix = [UInt8(ascii: ".")] + Array(mapped[(dot + 1)...].prefix(3))
            } else {
                suffix = [UInt8(ascii: ".")]
            }
            suffix += Array(";1".utf8)
        }
        for attempt in 0... {
            let marker: [UInt8] = attempt == 0 ? [] : Array("_\(attempt)".utf8)
            let room = (isFile ? 30 : 31) - suffix.count - marker.count
            let identifier = Array(stem.prefix(max(room, 1))) + marker + suffix
            if !directory.identifiers.contains(identifier) { return identifier }
        }
        return []
    }

    private static func ucs2(_ text: String) -> [UInt8] {
        text.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    private enum Child {
        case directory(Directory)
        case file(identifier: [UInt8], file: Int)

        var identifier: [UInt8] {
            switch self {
            case .directory(let directory): directory.identifier
            case .file(let identifier, _): identifier
            }
        }
    }

    /// A directory's entries after "." and "..", in the order its records are written: by name.
    private static func children(of directory: Directory) -> [Child] {
        (directory.directories.map(Child.directory) + directory.files.map { Child.file(identifier: $0.identifier, file: $0.file) })
            .sorted { $0.identifier.lexicographicallyPrecedes($1.identifier) }
    }

    private static func sort(_ directory: Directory) {
        directory.directories.sort { $0.identifier.lexicographicallyPrecedes($1.identifier) }
        directory.files.sort { $0.identifier.lexicographicallyPrecedes($1.identifier) }
        directory.directories.forEach(sort)
    }

    /// The tree's directories in path table order (by level, then parent, then name), numbered from 1.
    private static func numbered(_ root: Directory) -> [Directory] {
        var ordered = [root]
        var index = 0
        while index < ordered.count {
            ordered[index].number = index + 1
            ordered += ordered[index].directories
            index += 1
        }
        return ordered
    }

    private static func pathTableSize(_ directories: [Directory]) -> Int {
        directories.reduce(0) { $0 + 8 + $1.identifier.count + $1.identifier.count % 2 }
    }

    private static func pathTable(_ directories: [Directory], bigEndian: Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        for directory in directories {
            bytes += [UInt8(directory.identifier.count), 0]
            bytes += bigEndian ? bigEndian32(directory.sector) : littleEndian32(directory.sector)
            let parent = (directory.parent ?? directory).number
            bytes += bigEndian ? [UInt8(parent >> 8), UInt8(parent & 0xff)] : [UInt8(parent & 0xff), UInt8(parent >> 8)]
            bytes += directory.identifier
            if directory.identifier.count % 2 == 1 { bytes.append(0) }
        }
        return bytes
    }

    /// The bytes of a directory's records, each sector's tail left free when the next record does
    /// not fit it, rounded up to whole sectors.
    private static func directorySize(_ directory: Directory) -> Int {
        let identifiers = [[0], [1]] + children(of: directory).map(\.identifier)
        var offset = 0
        for identifier in identifiers {
            let length = 33 + identifier.count + (identifier.count % 2 == 0 ? 1 : 0)
            if (offset % sectorSize) + length > sectorSize { offset += sectorSize - offset % sectorSize }
            offset += length
        }
        return sectors(offset) * sectorSize
    }

    private static func sectors(_ bytes: Int) -> Int { (bytes + sectorSize - 1) / sectorSize }

    private static func littleEndian32(_ value: Int) -> [UInt8] {
        let value = UInt32(truncatingIfNeeded: value)
        return [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)]
    }

    private static func bigEndian32(_ value: Int) -> [UInt8] { littleEndian32(value).reversed() }

    private static func bothEndian32(_ value: Int) -> [UInt8] { littleEndian32(value) + bigEndian32(value) }

    private static func bothEndian16(_ value: Int) -> [UInt8] {
        [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    /// `text` in `bytes` bytes padded with spaces.
    private static func asciiText(_ text: String, bytes: Int) -> [UInt8] {
        Array((Array(text.utf8.prefix(bytes)) + Array(repeating: UInt8(ascii: " "), count: bytes)).prefix(bytes))
    }

    /// `text` in UCS-2 in `bytes` bytes padded with UCS-2 spaces.
    private static func jolietText(_ text: String, bytes: Int) -> [UInt8] {
        Array((Array(ucs2(text).prefix(bytes & ~1)) + Array(repeating: [0, 0x20], count: bytes / 2).flatMap { $0 }).prefix(bytes))
    }

    /// A directory record's date: years since 1900, month, day, hour, minute, second, UTC.
    private static func recordingDate(_ date: Date) -> [UInt8] {
        let parts = UTCTime(date)
        return [
            UInt8(clamping: parts.year - 1900), UInt8(clamping: parts.month), UInt8(clamping: parts.day),
            UInt8(clamping: parts.hour), UInt8(clamping: parts.minute), UInt8(clamping: parts.second), 0,
        ]
    }

    /// A volume descriptor's date: "YYYYMMDDHHMMSScc" and the offset from UTC.
    private static func volumeDate(_ date: Date) -> [UInt8] {
        Array((UTCTime(date).digits() + "00").utf8) + [0]
    }
}
