import CZlib
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Unpacks gzip files with zlib, streaming: 1 MiB in, up to 1 MiB out at a time, so a 20 GiB image
/// never sits in memory. No gzip program is run.
///
/// gzip squeezes zeros about a thousandfold, so a tenant's 20 MiB file can stand for 20 GiB: the
/// output is capped (``unpack(_:to:limit:)``), and runs of zeros are skipped over rather than
/// written, so the unpacked file is as sparse as a raw image is meant to be and a mostly-empty disk
/// image costs only its data.
public enum Gunzip {
    /// The size of the blocks checked for zeros: the usual file system block, so that every block
    /// skipped is a block not allocated.
    static let sparseBlock = 4096

    /// Unpacks `source` into `destination` (created or truncated), then fsyncs it. Concatenated
    /// gzip members are all unpacked, as gzip(1) does. Blocks of zeros become holes. On any
    /// failure `destination` is removed.
    ///
    /// Blocking: call it off the cooperative pool (``ImageCache`` does).
    ///
    /// - Parameter limit: the most bytes the unpacked file may hold (SFNODE_IMAGE_MAX_GIB).
    /// - Returns: the unpacked length in bytes (holes included).
    /// - Throws: ``ImageError/imageTooLarge(path:operation:limit:)`` as soon as the output would pass
    ///   `limit`, ``ImageError/gunzip(path:message:)`` with zlib's message for a corrupt or
    ///   truncated file, ``ImageError/diskFull(path:)`` when the disk fills up.
    @discardableResult
    public static func unpack(_ source: String, to destination: String, limit: Int64 = Int64.max) throws -> Int64 {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        if input < 0 { throw ImageError.unreadable(path: source, message: String(cString: strerror(errno))) }
        defer { close(input) }
        let output = try OutputFile(creating: destination)
        do {
            let written = try inflate(from: input, source: source, into: output, limit: limit)
            try output.sync()
            output.close()
            return written
        } catch {
            output.close()
            unlink(destination)
            throw error
        }
    }

    private static func inflate(from input: Int32, source: String, into output: OutputFile, limit: Int64) throws -> Int64 {
        let chunk = 1 << 20
        let inBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: chunk)
        let outBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: chunk)
        defer {
            inBuffer.deallocate()
            outBuffer.deallocate()
        }
        var stream = z_stream()
        // 15 + 32: the largest window, with automatic detection of the gzip (or zlib) header.
        var rc = inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw ImageError.gunzip(path: source, message: zlibMessage(&stream, rc)) }
        defer { inflateEnd(&stream) }

        var writer = SparseWriter(output: output)
        var finished = false  // the last member's end was seen and nothing followed it yet
        while true {
            let count = read(input, inBuffer, chunk)
            if count < 0 {
                if errno == EINTR { continue }
                throw ImageError.unreadable(path: source, message: String(cString: strerror(errno)))
            }
            if count == 0 { break }
            stream.next_in = inBuffer
            stream.avail_in = UInt32(count)
            // Until this input is used up and zlib has nothing more to give (a full output buffer
            // may mean more output is pending).
            repeat {
                if finished {
                    if stream.avail_in == 0 { break }
                    // Another gzip member follows the last one.
                    rc = inflateReset(&stream)
                    guard rc == Z_OK else { throw ImageError.gunzip(path: source, message: zlibMessage(&stream, rc)) }
                    finished = false
                }
                stream.next_out = outBuffer
                stream.avail_out = UInt32(chunk)
                rc = CZlib.inflate(&stream, Z_NO_FLUSH)
                switch rc {
                case Z_OK, Z_BUF_ERROR:
                    break
                case Z_STREAM_END:
                    finished = true
                default:
                    throw ImageError.gunzip(path: source, message: zlibMessage(&stream, rc))
                }
                let produced = chunk - Int(stream.avail_out)
                if produced > 0 {
                    guard Int64(produced) <= limit - writer.length else {
                        throw ImageError.imageTooLarge(path: source, operation: "gunzip", limit: limit)
                    }
                    try writer.write(UnsafeRawBufferPointer(start: outBuffer, count: produced))
                }
                if rc == Z_BUF_ERROR && produced == 0 { break }
            } while stream.avail_in > 0 || stream.avail_out == 0
        }
        guard finished else {
            throw ImageError.gunzip(path: source, message: "unexpected end of file (the download is truncated)")
        }
        try writer.finish()
        return writer.length
    }

    private static func zlibMessage(_ stream: inout z_stream, _ rc: Int32) -> String {
        if let message = stream.msg { return String(cString: message) + " (zlib error \(rc))" }
        switch rc {
        case Z_MEM_ERROR: return "out of memory (zlib error \(rc))"
        case Z_DATA_ERROR: return "corrupt data (zlib error \(rc))"
        default: return "zlib error \(rc)"
        }
    }
}

/// Writes a stream of bytes to a file, seeking over every aligned block of zeros instead of
/// writing it, and setting the length at the end so that a trailing hole still counts.
struct SparseWriter {
    let output: OutputFile
    /// Bytes of the stream so far, holes included.
    private(set) var length: Int64 = 0
    /// Zeros seen but not yet skipped over: they become a hole once data follows, or at the end.
    private var pendingZeros: Int64 = 0

    init(output: OutputFile) { self.output = output }

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        let block = Gunzip.sparseBlock
        var offset = 0
        var dataStart: Int?  // the start of the run of data blocks being gathered into one write
        while offset < bytes.count {
            // Blocks stay aligned to the stream, so a hole always covers whole file system blocks.
            let aligned = Int((length + Int64(offset)) % Int64(block))
            let end = min(bytes.count, offset + block - aligned)
            let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<end])
            if end - offset == block && isZero(slice) {
                if let start = dataStart {
                    try flush(UnsafeRawBufferPointer(rebasing: bytes[start..<offset]))
                    dataStart = nil
                }
                pendingZeros += Int64(block)
            } else if dataStart == nil {
                dataStart = offset
            }
            offset = end
        }
        if let start = dataStart { try flush(UnsafeRawBufferPointer(rebasing: bytes[start..<bytes.count])) }
        length += Int64(bytes.count)
    }

    /// Gives the file its full length when it ends in zeros.
    func finish() throws {
        if pendingZeros > 0 { try output.setLength(length) }
    }

    private mutating func flush(_ data: UnsafeRawBufferPointer) throws {
        if pendingZeros > 0 {
            try output.skip(pendingZeros)
            pendingZeros = 0
        }
        try output.write(data)
    }

    private func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // Word by word: this runs over every byte of a multi-GiB image.
        let words = bytes.count / 8
        for index in 0..<words where bytes.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
        return bytes[(words * 8)...].allSatisfy { $0 == 0 }
    }
}
