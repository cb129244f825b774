import SFAPI
import SFControl
import SFDaemonSupport

extension NodeConfiguration {
    /// The namespaces' quotas, from their settings.
    var namespaceQuotas: NamespaceQuotas {
        var quotas = NamespaceQuotas()
        quotas.instances = quotaInstances
        quotas.vcpus = quotaVCPUs
        quotas.memoryMiB = quotaMemoryGiB.multipliedReportingOverflow(by: 1024).partialValue
        quotas.diskGiB = quotaDiskGiB
        quotas.blobBytes = Int64(quotaBlobGiB) << 30
        quotas.pendingUploads = quotaPendingUploads
        quotas.uploadBytes = Int64(uploadMaxGiB) << 30
        quotas.networks = quotaNetworks
        quotas.floatingAddresses = quotaFloatingAddresses
        quotas.queuedJobs = quotaQueuedJobs
        quotas.metadataKeys = quotaMetadataKeys
        quotas.trusts = quotaTrusts
        quotas.snapshotVersions = quotaSnapshotVersions
        quotas.waitingRequests = quotaWaitingRequests
        return quotas
    }

    /// The API's limits, from their settings.
    var apiLimits: APILimits {
        var limits = APILimits()
        limits.authBodyBytes = apiAuthBodyBytes
        limits.jsonBodyBytes = apiJSONBodyBytes
        limits.jsonDepth = apiJSONDepth
        limits.idleTimeout = .seconds(apiIdleTimeoutSeconds)
        limits.headerTimeout = .seconds(apiHeaderTimeoutSeconds)
        limits.maxConnections = apiMaxConnections
        limits.loginFailuresPerNamespace = loginFailuresPerNamespace
        limits.loginFailuresPerAddress = loginFailuresPerAddress
        limits.loginWindow = .seconds(loginWindowSeconds)
        limits.loginQueuePerNamespace = loginQueuePerNamespace
        limits.keysPerNamespace = keysPerNamespace
        return limits
    }
}
