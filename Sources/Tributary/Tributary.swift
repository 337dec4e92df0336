public enum Tributary {}
