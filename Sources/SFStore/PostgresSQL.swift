import Foundation
import Synchronization

/// The store's SQL (SQLite's spelling, StoreDatabase.swift) as PostgreSQL takes it:
/// - `?N` becomes `$N`, and a bare `?` the next number after the highest so far, as SQLite numbers
///   it; marks inside quoted text or names are left alone;
/// - `json_each($N)` (a JSON array of text) becomes `json_array_elements_text($N::json)`, whose
///   column is also named `value`;
/// - `INSERT OR IGNORE INTO …` becomes `INSERT INTO … ON CONFLICT DO NOTHING`;
/// - `$N IS NULL` (an optional filter, always on text) becomes `$N::text IS NULL`;
/// - SQLite's `INDEXED BY` hint goes.
///
/// Each statement is translated once and remembered (the store's statements are a fixed set,
/// most of them `static let`s); the memory is bounded all the same.
enum PostgresSQL {
    private static let translated = Mutex<[String: String]>([:])
    /// More statements than the store has; past it the memory starts again.
    private static let rememberedLimit = 4096

    static func translate(_ sql: String) -> String {
        if let known = translated.withLock({ $0[sql] }) { return known }
        let result = rewrite(sql)
        translated.withLock { memory in
            if memory.count >= rememberedLimit { memory.removeAll(keepingCapacity: true) }
            memory[sql] = result
        }
        return result
    }

    static func rewrite(_ sql: String) -> String {
        var output = ""
        output.reserveCapacity(sql.utf8.count + 16)
        var highest = 0
        var quote: Character?
        var characters = sql.makeIterator()
        var pending: Character? = nil
        func next() -> Character? {
            if let character = pending {
                pending = nil
                return character
            }
            return characters.next()
        }
        while let character = next() {
            if let open = quote {
                output.append(character)
                if character == open { quote = nil }
                continue
            }
            switch character {
            case "'", "\"":
                quote = character
                output.append(character)
            case "?":
                var digits = ""
                while let following = next() {
                    if following.isASCII, following.isNumber {
                        digits.append(following)
                    } else {
                        pending = following
                        break
                    }
                }
                let number = Int(digits) ?? (highest + 1)
                highest = max(highest, number)
                output += "$\(number)"
            default:
                output.append(character)
            }
        }
        output = output.replacing(#/json_each\((\$\d+)\)/#) { match in "json_array_elements_text(\(match.output.1)::json)" }
        // An optional filter, `?N IS NULL OR column = ?N`: PostgreSQL types a mark where it first
        // meets it, and a NULL bound without a type says nothing there. The store's optional
        // filters are all text.
        output = output.replacing(#/(\$\d+) IS NULL/#) { match in "\(match.output.1)::text IS NULL" }
        // SQLite's index hint; PostgreSQL's planner has the statistics it lacks.
        output = output.replacing(#/ INDEXED BY \w+/#) { _ in "" }
        if output.hasPrefix("INSERT OR IGNORE INTO") {
            output = "INSERT INTO" + output.dropFirst("INSERT OR IGNORE INTO".count) + " ON CONFLICT DO NOTHING"
        }
        return output
    }
}

extension PostgresSQL {
    /// A PostgreSQL array literal of `elements`, each quoted (`{"1","w\"2"}`), for a mark cast to
    /// an array type: the store's marks bind text, and a quoted element suits every element type.
    static func arrayLiteral(_ elements: [String]) -> String {
        "{" + elements.map { element in
            "\"" + element.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }.joined(separator: ",") + "}"
    }
}
