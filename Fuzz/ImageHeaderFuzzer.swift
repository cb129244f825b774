// libFuzzer's entry point for the image header parsers, compiled together with
// Sources/SFBlobs/Image/ImageHeader.swift and ImageError.swift by scripts/fuzz-image-headers
// (`swiftc -sanitize=fuzzer`): not part of the Swift package.

/// Runs both header checks (raw allowed and not) over one input. Returning is a pass; a Swift trap
/// (overflow, index out of range) is what libFuzzer reports as a crash, and so is an error that is
/// not an ``ImageError``, which callers could not turn into a clear job error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    for allowRaw in [true, false] {
        do {
            _ = try HeaderCheck(source: InMemoryImage(path: "/fuzz/input", bytes: bytes), allowRaw: allowRaw).run()
        } catch let error as ImageError {
            // The message is built from header values too.
            _ = error.description
        } catch {
            fatalError("the header check threw something other than an ImageError: \(error)")
        }
    }
    return 0
}
