#version 150
// Planar shadows: the same instanced boxes, each corner pushed along the sun's rays onto the
// ground (z = u_lift), drawn as darkened ground.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec3 u_sun;
uniform float u_lift;
uniform vec2 u_fog_range;
in vec4 p3d_Vertex;
in vec4 i_offset;
in vec4 i_scale;
in vec4 i_color;
in vec4 i_extra;
out float v_fog;

void main() {
    float c = cos(i_offset.w);
    float s = sin(i_offset.w);
    vec3 p = p3d_Vertex.xyz * i_scale.xyz;
    p = vec3(c * p.x - s * p.y, s * p.x + c * p.y, p.z) + i_offset.xyz;
    vec3 sun = normalize(u_sun);
    p.xy -= sun.xy * (p.z / max(sun.z, 0.2));
    p.z = u_lift;
    float dist = length((p3d_ModelViewMatrix * vec4(p, 1.0)).xyz);
    v_fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(p, 1.0);
}
