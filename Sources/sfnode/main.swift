import Foundation
print("sfnode")
