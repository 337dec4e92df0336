/// How secrets appear in API responses: never in full.
public enum SecretMask {
    /// `"****abcd"` for secrets long enough that four characters reveal little, else `"****"`.
    public static func mask(_ secret: String) -> String {
        secret.count >= 12 ? "****" + secret.suffix(4) : "****"
    }
}
