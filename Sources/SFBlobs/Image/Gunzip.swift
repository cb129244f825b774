import CZlib
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Unpacks gzip files with zlib, streaming: 1 MiB in, up to 1 MiB out at a time, so a 20 GiB image
/// never sits in memory. No gzip program is run.
public enum Gunzip {
    /// Unpacks `source` into `destination` (created or truncated), then fsyncs it. Concatenated
    /// gzip members are all unpacked, as gzip(1) does. On any failure `destination` is removed.
    ///
    /// Blocking: call it off the cooperative pool (``ImageCache`` does).
    ///
    /// - Returns: the number of bytes written.
    /// - Throws: ``ImageError/gunzip(path:message:)`` with zlib's message for a corrupt or truncated
    ///   file, ``ImageError/diskFull(path:)`` when the disk fills up.
    @discardableResult
    public static func unpack(_ source: String, to destination: String) throws -> Int64 {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        if input < 0 { throw ImageError.unreadable(path: source, message: String(cString: strerror(errno))) }
        defer { close(input) }
        let output = try OutputFile(creating: destination)
        do {
            let written = try inflate(from: input, source: source, into: output)
            try output.sync()
            output.close()
            return written
        } catch {
            output.close()
            unlink(destination)
            throw error
        }
    }

    private static func inflate(from input: Int32, source: String, into output: OutputFile) throws -> Int64 {
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

        var written: Int64 = 0
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
                    try output.write(UnsafeRawBufferPointer(start: outBuffer, count: produced))
                    written += Int64(produced)
                }
                if rc == Z_BUF_ERROR && produced == 0 { break }
            } while stream.avail_in > 0 || stream.avail_out == 0
        }
        guard finished else {
            throw ImageError.gunzip(path: source, message: "unexpected end of file (the download is truncated)")
        }
        return written
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
