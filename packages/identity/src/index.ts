export * from './aws-tags.js';
export * from './discovery.js';
export * from './dpop.js';
export * from './introspection.js';
export * from './key-file.js';
export * from './keys.js';
export * from './mint.js';
export * from './subject.js';
