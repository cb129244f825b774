/// The OpenAPI 3 document served at `/openapi.json`.
enum OpenAPIDocument {
    static let json = #"{"openapi": "3.0.3", "info": {"title": "sfnode", "version": "1"}, "paths": {}}"#
}
