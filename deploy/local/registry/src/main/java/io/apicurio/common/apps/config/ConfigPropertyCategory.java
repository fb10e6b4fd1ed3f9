package io.apicurio.common.apps.config;

/**
 * Stand-in for a class that the Apicurio Registry 3.0.9 app references but that no module served
 * here contains (config-definitions 3.0.9 is not served; 3.0.6 predates it). The constant names
 * are the ones the app's bytecode uses; the registry only uses them to group its config docs.
 */
public enum ConfigPropertyCategory {
    CATEGORY_API,
    CATEGORY_AUTH,
    CATEGORY_CACHE,
    CATEGORY_CCOMPAT,
    CATEGORY_DOWNLOAD,
    CATEGORY_GITOPS,
    CATEGORY_HEALTH,
    CATEGORY_HIDDEN,
    CATEGORY_IMPORT,
    CATEGORY_LIMITS,
    CATEGORY_REDIRECTS,
    CATEGORY_REST,
    CATEGORY_SEMVER,
    CATEGORY_STORAGE,
    CATEGORY_SYSTEM,
    CATEGORY_UI;

    public String getRawValue() {
        return name().substring("CATEGORY_".length()).toLowerCase(java.util.Locale.ROOT);
    }
}
