// Placeholder translation unit until this layer's first source lands.
