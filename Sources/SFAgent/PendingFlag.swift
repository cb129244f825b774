/// A flag that stays raised until the work it stands for has been done.
actor PendingFlag {
    private(set) var isRaised = false

    func raise() { isRaised = true }
    func clear() { isRaised = false }
}
