// swift-tools-version:6.0
import PackageDescription

// Layout, from the plumbing up:
//   C targets (CLibvirt, CNetlink, CIPTC): module maps and shims over the system libraries;
//   CLinux: the few Linux calls Swift's Glibc module does not import.
//   SFSystem: Linux process plumbing (namespace threads, network namespaces, locks, errno).
//   SFMetrics: the Prometheus exposition (registry, scrape-time collectors, `process_*`).
//   SFNetlink, SFFirewall, SFLibvirt: one thin, typed Swift module per C library.
//   SFStore: the store contract and its embedded backend.
//   SFBlobs: blob data on disk, image fetching, inspection and the image cache.
//   SFControl: the use cases (validation, objects with their jobs, placement) the CLI, the API and
//   the agent share; never the plumbing, the agent or an HTTP server.
//   SFDoctor: the host checks of `sfnode doctor` and of the agent's start.
//   SFAgent: realizers, job handlers, reconciliation.
//   SFAPI: the Shaken Fist REST API on Hummingbird, over SFControl; reaches agents only through the
//   store and its queue.
//   sfnode: the one executable.
// Dependencies point one way: towards the plumbing.
let package = Package(
    name: "sfnode",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sfnode", targets: ["sfnode"]),
        .library(name: "SFNetlink", targets: ["SFNetlink"]),
        .library(name: "SFFirewall", targets: ["SFFirewall"]),
        .library(name: "SFLibvirt", targets: ["SFLibvirt"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        // 1.32.2 fixed a crash in LISTEN; the cluster store's wake-ups depend on it.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Already there under postgres-nio and async-http-client; named for NIOThreadPool, on which
        // the PostgreSQL store runs its transactions off the cooperative pool.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // Metrics: libraries record through swift-metrics' API; the executable bootstraps the
        // Prometheus backend and serves its text format.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .systemLibrary(
            name: "CNetlink", pkgConfig: "libnl-route-3.0", providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]),
        .systemLibrary(name: "CIPTC", pkgConfig: "libiptc", providers: [.apt(["libiptc-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        .target(name: "CLinux"),

        .target(name: "SFSystem", dependencies: ["CLinux", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "SFMetrics",
            dependencies: [
                "SFSystem", .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(
            name: "SFNetlink",
            dependencies: ["CNetlink", "SFSystem", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "SFFirewall",
            dependencies: [
                "CIPTC", "SFSystem", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(
            name: "SFLibvirt",
            dependencies: ["CLibvirt", "SFSystem", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "SFStore",
            dependencies: [
                "SFSystem", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]),

        .target(
            name: "SFBlobs",
            dependencies: [
                "SFSystem", "SFStore", "CZlib", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                // The peer blob server: a listening socket made inside the mesh's namespace, which
                // only NIO's bootstrap takes as it is (see PeerServer).
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .target(
            name: "SFControl",
            dependencies: [
                "SFSystem", "SFStore", "SFBlobs", "SFMetrics", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),

        .target(
            name: "SFDaemonSupport",
            dependencies: [
                "SFSystem", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .target(
            name: "SFDoctor",
            dependencies: [
                "CLinux", "SFSystem", "SFNetlink", "SFLibvirt", "SFStore", "SFDaemonSupport", .product(name: "Logging", package: "swift-log"),
            ]),

        .target(
            name: "SFAgent",
            dependencies: [
                "SFSystem", "SFNetlink", "SFFirewall", "SFLibvirt", "SFStore", "SFBlobs", "SFControl", "SFDaemonSupport",
                "SFMetrics", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .target(
            name: "SFAPI",
            dependencies: [
                "SFSystem", "SFStore", "SFControl", "SFMetrics", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),

        .executableTarget(
            name: "sfnode",
            dependencies: [
                "SFSystem", "SFNetlink", "SFFirewall", "SFLibvirt", "SFStore", "SFBlobs", "SFControl", "SFAgent",
                "SFAPI", "SFDaemonSupport", "SFDoctor", "SFMetrics", .product(name: "Logging", package: "swift-log"),
                // `sfnode events --follow --api`: a client of a remote API's streaming events.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .executableTarget(
            name: "HostPlumbingBenchmark",
            dependencies: [
                "SFSystem", "SFNetlink", "SFFirewall", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/HostPlumbingBenchmark"),

        .executableTarget(
            name: "AgentBenchmark",
            dependencies: [
                "SFSystem", "SFNetlink", "SFLibvirt", "SFStore", "SFBlobs", "SFControl", "SFAgent",
                "SFTestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/AgentBenchmark"),

        .executableTarget(
            name: "ImageBenchmark",
            dependencies: [
                "SFSystem", "SFStore", "SFBlobs", "SFTestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/ImageBenchmark"),

        .executableTarget(
            name: "StoreBenchmark",
            dependencies: ["SFSystem", "SFStore"],
            path: "Benchmarks/StoreBenchmark"),

        .executableTarget(
            name: "APIBenchmark",
            dependencies: [
                "SFSystem", "SFStore", "SFControl", "SFLibvirt", "SFTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Benchmarks/APIBenchmark"),

        .executableTarget(
            name: "MetricsBenchmark",
            dependencies: [
                "SFSystem", "SFStore", "SFControl", "SFLibvirt", "SFAgent", "SFAPI", "SFMetrics", "SFTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Benchmarks/MetricsBenchmark"),

        .executableTarget(
            name: "QueueBenchmark",
            dependencies: [
                "SFSystem", "SFStore", "SFControl", "SFAgent", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/QueueBenchmark"),

        .target(
            name: "SFTestSupport",
            dependencies: [
                "SFSystem", "SFNetlink", "SFLibvirt", "SFStore", "SFAgent",
                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/SFTestSupport"),
        .testTarget(name: "SFSystemTests", dependencies: ["SFSystem", "SFTestSupport"]),
        .testTarget(name: "SFMetricsTests", dependencies: ["SFMetrics"]),
        .testTarget(name: "SFNetlinkTests", dependencies: ["SFNetlink", "SFTestSupport"]),
        .testTarget(name: "SFFirewallTests", dependencies: ["SFFirewall", "SFTestSupport"]),
        .testTarget(name: "SFLibvirtTests", dependencies: ["SFLibvirt", "SFTestSupport"]),
        .testTarget(name: "SFStoreTests", dependencies: ["SFStore", "SFTestSupport"]),
        .testTarget(name: "SFBlobsTests", dependencies: ["SFBlobs", "SFStore", "SFTestSupport"]),
        .testTarget(name: "SFControlTests", dependencies: ["SFControl", "SFStore", "SFTestSupport"]),
        .testTarget(
            name: "SFDaemonSupportTests",
            dependencies: [
                "SFDaemonSupport", "SFSystem", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]),
        .testTarget(name: "SFDoctorTests", dependencies: ["SFDoctor", "SFDaemonSupport", "SFStore", "SFSystem", "SFTestSupport"]),
        .testTarget(name: "SFAgentTests", dependencies: ["SFAgent", "SFStore", "SFControl", "SFBlobs", "SFTestSupport"]),
        .testTarget(
            name: "SFAPITests",
            dependencies: [
                "SFAPI", "SFControl", "SFStore", "SFMetrics", "SFTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["SFNetlink", "SFFirewall", "SFLibvirt", "SFSystem", "SFAgent", "SFTestSupport"]),
    ]
)
